"""Request building options shared by every data set (:class:`DatasetOptions`).

Each converter subclasses :class:`DatasetOptions` in its own module with its defaults and extra
fields; `longseq.datasets.convert.config` puts one section per registered converter into the
config (`longseq.datasets.convert.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Split names a converter may write (``test_random``: KuaiRand's randomly exposed log).
SPLITS: tuple[str, ...] = ("train", "valid", "test", "test_random")


@dataclass
class SplitConfig:
    """Time-based split of the *requests* by ``request_ts`` (Unix seconds).

    ``train_start <= ts < valid_start``: train; ``valid_start <= ts < test_start``: valid;
    ``ts >= test_start``: test. Requests before ``train_start`` are not written (their events
    still feed later histories: a warm-up). A start of 0 is derived: ``valid_start`` /
    ``test_start`` from the fractions (the latest ``test_fraction`` of target events, rounded
    to the hour, are test; the ``valid_fraction`` before them valid); ``train_start`` 0 means
    no warm-up.
    """

    train_start: int = 0
    valid_start: int = 0
    test_start: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass
class SampleConfig:
    """Fraction of requests kept per split: a seeded hash of (seed, user, request_ts) < rate.

    Histories are stored once per request, so output size grows with requests x history
    length; these rates bound it without touching what any kept request contains.
    """

    train: float = 1.0
    valid: float = 1.0
    test: float = 1.0
    test_random: float = 1.0


@dataclass
class DatasetOptions:
    """Request building options common to all data sets.

    Attributes:
        max_hist_len: history cap per request (the most recent events are kept); 0 = no cap.
        group: ``gap`` (a new request when the gap to the previous target event exceeds
            ``gap_s``) or ``window`` (clock-aligned windows of ``window_s`` seconds starting at
            ``window_origin``). Either way a request holds at most ``max_targets`` events (a
            longer group continues as the next request).
        split / sample: see :class:`SplitConfig` and :class:`SampleConfig`.
        features: write the data set's side features (``feat_*`` / ``tgt_feat_*`` columns,
            declared in ``meta.json``); false: none (the output of before features existed).
    """

    max_hist_len: int = 1000
    group: str = "gap"
    gap_s: int = 600
    window_s: int = 86400
    window_origin: int = 0
    max_targets: int = 64
    split: SplitConfig = field(default_factory=SplitConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    features: bool = True

    def checks(self, prefix: str) -> list[tuple[str, bool, str]]:
        """``(key, ok, what it must be)`` per check of these options (``prefix``: the section
        name); a data set's subclass extends the list with its own fields."""
        s = self.split
        checks = [
            (f"{prefix}.max_hist_len", self.max_hist_len >= 0, ">= 0"),
            (f"{prefix}.max_targets", self.max_targets >= 1, ">= 1"),
            (f"{prefix}.group", self.group in ("gap", "window"), "gap|window"),
            (f"{prefix}.gap_s", self.gap_s >= 0, ">= 0"),
            (f"{prefix}.window_s", self.window_s >= 1, ">= 1"),
            (f"{prefix}.split.valid_fraction", 0 <= s.valid_fraction < 1, "in [0, 1)"),
            (f"{prefix}.split.test_fraction", 0 < s.test_fraction < 1, "in (0, 1)"),
        ]
        for name in SPLITS:
            ok = 0 <= getattr(self.sample, name) <= 1
            checks.append((f"{prefix}.sample.{name}", ok, "in [0, 1]"))
        return checks
