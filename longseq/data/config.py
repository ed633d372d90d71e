"""Typed config of the training data section (``data:`` in ``configs/train.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from longseq.data.windows import WindowConfig

#: Values of ``data.on_bad_row``.
POLICIES: tuple[str, ...] = ("error", "skip")


@dataclass
class DataConfig:
    """Where the data is and how it is batched.

    Attributes:
        path: data set folder holding ``train/``, ``test/`` and ``meta.json``.
        batch_size: requests per rank per step (pointwise: rows = targets per rank per step).
            With ``max_tokens`` it is the most requests a batch may hold.
        pointwise: one target per row with the history repeated (the baseline layout).
        shuffle_buffer: rows each reader loads and shuffles at a time (its window).
        window: training-time history window (length extrapolation).
        split: split to train on.
        num_workers: data-loader worker processes per rank that read, sample windows and
            collate (0: in the training process). Each reads its own part of the rank's share.
        prefetch_factor: batches each worker prepares ahead (``num_workers > 0``).
        on_bad_row: ``error`` (stop, naming file, row group, row, request_id and column) or
            ``skip`` (drop the request, count it and report it to ``bad_rows_log`` and stderr).
        bad_rows_log: JSON-lines file receiving every skipped request (empty: the trainer uses
            ``<run_dir>/bad_rows.rank<r>.jsonl``; other readers report to stderr only).
        max_tokens: token-budget batching: a batch stops before its served history tokens
            (pointwise: times its targets) would pass this (always at least one request);
            0 = off (``batch_size`` requests per batch).
        max_hist_len: longest history a request may bring: longer ones are cut to their most
            recent ``max_hist_len`` events when read (counted, reported once per reader on
            stderr). 0 = ``meta.json``'s ``hist_len_max`` (no cap without it); -1 = no cap.
        max_targets: most targets a request may bring: requests with more keep their first
            ``max_targets`` (every ``tgt_*`` column alike; counted, reported once per reader on
            stderr), so that one outlier request cannot blow up a batch. 0 = ``meta.json``'s
            ``targets_per_request`` (no cap without it); -1 = no cap.
    """

    path: str = MISSING
    batch_size: int = 32
    pointwise: bool = False
    shuffle_buffer: int = 2048
    window: WindowConfig = field(default_factory=WindowConfig)
    split: str = "train"
    num_workers: int = 0
    prefetch_factor: int = 2
    on_bad_row: str = "error"
    bad_rows_log: str = ""
    max_tokens: int = 0
    max_hist_len: int = 0
    max_targets: int = 0

    def validate(self, prefix: str = "data") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if self.batch_size <= 0:
            raise ValueError(f"{prefix}.batch_size must be > 0, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"{prefix}.num_workers must be >= 0, got {self.num_workers}")
        if self.prefetch_factor < 1:
            raise ValueError(f"{prefix}.prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if self.on_bad_row not in POLICIES:
            raise ValueError(
                f"{prefix}.on_bad_row must be {'|'.join(POLICIES)}, got {self.on_bad_row!r}"
            )
        if self.max_tokens < 0:
            raise ValueError(f"{prefix}.max_tokens must be >= 0 (0 = off), got {self.max_tokens}")
        if self.max_hist_len < -1:
            raise ValueError(
                f"{prefix}.max_hist_len must be >= 1, 0 (meta.json's hist_len_max) or -1 (no "
                f"cap), got {self.max_hist_len}"
            )
        if self.max_targets < -1:
            raise ValueError(
                f"{prefix}.max_targets must be >= 1, 0 (meta.json's targets_per_request) or -1 "
                f"(no cap), got {self.max_targets}"
            )
        self.window.validate(f"{prefix}.window")
