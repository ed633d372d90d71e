"""Typed configs of ``python -m longseq.datasets.convert`` (registered as ``convert_schema``).

Options shared by every data set live in :class:`DatasetOptions`; each data set has its own
section (``kuairand``, ``taobao``, ``movielens``) whose *defaults* differ (a subclass), so
``dataset=kuairand`` alone gives the documented reference conversion and any field can be
overridden on the command line, e.g. ``kuairand.gap_s=300 kuairand.sample.train=0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

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
    """

    max_hist_len: int = 1000
    group: str = "gap"
    gap_s: int = 600
    window_s: int = 86400
    window_origin: int = 0
    max_targets: int = 64
    split: SplitConfig = field(default_factory=SplitConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


#: KuaiRand feedback columns turned into the history action (bit k = column k is 1).
KUAIRAND_ACTION_COLUMNS = [
    "is_click", "long_view", "is_like", "is_follow",
    "is_comment", "is_forward", "is_hate", "is_profile_enter",
]  # fmt: skip


@dataclass
class KuaiRandOptions(DatasetOptions):
    """KuaiRand (1K, 27K, Pure). Defaults: the 04-08..04-21 log is warm-up (history only),
    train 04-22..05-01, valid 05-02..05-05, test 05-06..05-08 (Beijing time).

    Attributes:
        tasks: label columns of the log written as ``tgt_<column>``.
        action_columns: feedback columns packed into ``hist_action`` as bits (2^k actions).
        random_from: the randomly exposed log becomes the ``test_random`` split from this split's
            start on: ``test`` (default), ``valid``, ``all`` (the whole random log) or ``none``
            (the random log is not read at all, so it is in no history either).
        random_in_history: random-log impressions are part of later histories.
        tz_offset_s: offset of the ``date``/``hourmin`` columns from UTC (used only where
            ``time_ms`` is empty).
    """

    max_hist_len: int = 10000
    gap_s: int = 600
    max_targets: int = 128
    split: SplitConfig = field(
        default_factory=lambda: SplitConfig(
            train_start=1650556800, valid_start=1651420800, test_start=1651766400
        )
    )
    tasks: list[str] = field(default_factory=lambda: ["is_click", "long_view", "is_like"])
    action_columns: list[str] = field(default_factory=lambda: list(KUAIRAND_ACTION_COLUMNS))
    random_from: str = "test"
    random_in_history: bool = True
    tz_offset_s: int = 28800


@dataclass
class TaobaoOptions(DatasetOptions):
    """Taobao UserBehavior. Defaults: daily requests (Beijing days), events outside
    2017-11-25..2017-12-03 dropped, valid 12-02, test 12-03.

    Attributes:
        behaviors: behavior strings in action-id order (``hist_action`` = index).
        label_behaviors: extra tasks ``tgt_<behavior>`` (1 if the user did it to the target in
            the request); ``tgt_click`` is 1 for every observed target and 0 for sampled ones.
        neg_ratio: sampled negatives per observed target (rounded per request).
        ts_min / ts_max: events outside ``[ts_min, ts_max)`` are dropped (0: no bound).
    """

    max_hist_len: int = 1000
    group: str = "window"
    window_s: int = 86400
    window_origin: int = 1511539200
    max_targets: int = 64
    split: SplitConfig = field(
        default_factory=lambda: SplitConfig(valid_start=1512144000, test_start=1512230400)
    )
    behaviors: list[str] = field(default_factory=lambda: ["pv", "buy", "cart", "fav"])
    label_behaviors: list[str] = field(default_factory=lambda: ["buy"])
    neg_ratio: float = 1.0
    ts_min: int = 1511539200
    ts_max: int = 1512316800


@dataclass
class MovieLensOptions(DatasetOptions):
    """MovieLens (100K ``u.data``, 1M/10M ``ratings.dat``, 20M/25M/32M ``ratings.csv``).

    Attributes:
        threshold: ``tgt_<task>`` = rating >= threshold.
        task: the task name.
    """

    max_hist_len: int = 2000
    gap_s: int = 1800
    max_targets: int = 64
    threshold: float = 4.0
    task: str = "like"


@dataclass
class ConvertConfig:
    """``python -m longseq.datasets.convert dataset=<name> src=<raw dir> out=<dir> [options]``.

    Attributes:
        dataset: ``kuairand`` | ``taobao`` | ``movielens``.
        src: folder of the files as published (searched recursively).
        out: output folder (``train/``, ``valid/``, ``test/`` [, ``test_random/``],
            ``meta.json``, ``stats.json``, ``vocab/``).
        seed: request sampling and negative sampling.
        bucket_mb: raw input bytes per user bucket (sets the number of buckets, i.e. memory).
        block_mb: CSV block read at a time.
        hist_chunk_events: history events gathered at a time when writing a bucket.
        tmp: folder for the bucket files (default ``<out>/_buckets``), removed at the end
            unless ``keep_tmp``.
    """

    dataset: str = MISSING
    src: str = MISSING
    out: str = MISSING
    seed: int = 0
    kuairand: KuaiRandOptions = field(default_factory=KuaiRandOptions)
    taobao: TaobaoOptions = field(default_factory=TaobaoOptions)
    movielens: MovieLensOptions = field(default_factory=MovieLensOptions)
    bucket_mb: float = 64.0
    block_mb: float = 16.0
    hist_chunk_events: int = 1_000_000
    row_group_size: int = 128
    rows_per_file: int = 50_000
    compression: str = "zstd"
    tmp: str = ""
    keep_tmp: bool = False
    progress: bool = True

    def options(self) -> DatasetOptions:
        """The selected data set's section."""
        if self.dataset not in ("kuairand", "taobao", "movielens"):
            raise ValueError(
                f"convert config: dataset={self.dataset!r} must be kuairand|taobao|movielens"
            )
        return getattr(self, self.dataset)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending key."""
        o, p = self.options(), self.dataset
        checks = [
            (f"{p}.max_hist_len", o.max_hist_len >= 0, ">= 0"),
            (f"{p}.max_targets", o.max_targets >= 1, ">= 1"),
            (f"{p}.group", o.group in ("gap", "window"), "gap|window"),
            (f"{p}.gap_s", o.gap_s >= 0, ">= 0"),
            (f"{p}.window_s", o.window_s >= 1, ">= 1"),
            (f"{p}.split.valid_fraction", 0 <= o.split.valid_fraction < 1, "in [0, 1)"),
            (f"{p}.split.test_fraction", 0 < o.split.test_fraction < 1, "in (0, 1)"),
            ("bucket_mb", self.bucket_mb > 0, "> 0"),
            ("block_mb", self.block_mb * 2**20 >= 256, ">= 256 bytes"),
            ("hist_chunk_events", self.hist_chunk_events >= 1, ">= 1"),
            ("row_group_size", self.row_group_size >= 1, ">= 1"),
            ("rows_per_file", self.rows_per_file >= 1, ">= 1"),
        ]
        checks += [(f"{p}.sample.{s}", 0 <= getattr(o.sample, s) <= 1, "in [0, 1]") for s in SPLITS]
        if isinstance(o, KuaiRandOptions):
            ok = o.random_from in ("test", "valid", "all", "none")
            checks.append((f"{p}.random_from", ok, "test|valid|all|none"))
            checks.append((f"{p}.tasks", len(o.tasks) >= 1, "non-empty"))
        if isinstance(o, TaobaoOptions):
            checks.append((f"{p}.neg_ratio", o.neg_ratio >= 0, ">= 0"))
            bad = [b for b in o.label_behaviors if b not in o.behaviors]
            checks.append((f"{p}.label_behaviors", not bad, f"a subset of {o.behaviors}"))
        for key, ok, want in checks:
            if not ok:
                raise ValueError(f"convert config: {key} must be {want}")


def register() -> None:
    """Register ``convert_schema`` with Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="convert_schema", node=ConvertConfig)
