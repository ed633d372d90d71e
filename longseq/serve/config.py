"""Typed config of ``python -m longseq.serve`` (registered as ``serve_schema``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from longseq.data.windows import check_served_windows
from longseq.eval.config import EvalDataConfig


@dataclass
class ServeConfig:
    """Batch scoring of a split with a checkpoint, through the serving path.

    Attributes:
        checkpoint: a ``step_<n>`` checkpoint folder, a pointer file
            (``<run>/checkpoints/latest`` or ``best``) or a run dir (its latest checkpoint).
            Loaded as the evaluation loads it (no code runs from the checkpoint).
        data: the split to score (``data.path``/``data.split``), read ``data.batch_size``
            requests at a time (the evaluation's data config).
        window: most recent history events served per request; 0 = the full stored history.
        out: output folder; ``scores.parquet`` (one row per target) is written there.
        progress: a progress bar on stderr (only when stderr is a terminal).
        cache_mb: bound of the user-state cache in MiB (0: no cache). Keys are
            ``(user_id, (history length, last event time, request time))``.
        threads: torch intra-op threads (0: torch's default). The per-request path runs many
            small operations; on oversubscribed CPUs 1 thread is faster and steadier.
        packed: score each batch of ``data.batch_size`` requests at once, packed (no padding;
            STCA's attention as one FlexAttention call per layer, compiled per bucketed batch
            shape) instead of request by request; the user-state cache is then not used.
        match_tables: index each request's events by id so that the default model's match
            bias and count channel cost a lookup and the candidate's matched events instead of a
            pass over every event (the same scores; docs/serving.md, "match tables").
    """

    checkpoint: str = MISSING
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    window: int = 0
    out: str = MISSING
    progress: bool = True
    cache_mb: float = 256.0
    threads: int = 0
    packed: bool = False
    match_tables: bool = True

    def validate(self) -> None:
        """Every check of the settings that needs no checkpoint or data, run once by
        `longseq.serve.run.serve`; raises ``ValueError`` naming the key."""
        if not self.checkpoint:
            raise ValueError("checkpoint must be set (a checkpoint folder, pointer or run dir)")
        if not self.out:
            raise ValueError("out must be set (the folder of scores.parquet)")
        check_served_windows([self.window], "window")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: torch's default), got {self.threads}")
        if self.cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0, got {self.cache_mb}")
        self.data.validate("data")


def register() -> None:
    ConfigStore.instance().store(name="serve_schema", node=ServeConfig)
