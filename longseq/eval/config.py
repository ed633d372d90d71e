"""Typed config of ``python -m longseq.eval`` (registered as ``eval_schema``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from longseq.data.windows import check_served_windows


@dataclass
class EvalDataConfig:
    """The data set folder and split to evaluate."""

    path: str = MISSING
    split: str = "test"
    batch_size: int = 64

    def validate(self, prefix: str = "data") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if not self.path:
            raise ValueError(f"{prefix}.path must be set (a longseq data set folder)")
        if not self.split:
            raise ValueError(f"{prefix}.split must be set (a split folder of {prefix}.path)")
        if self.batch_size < 1:
            raise ValueError(f"{prefix}.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class EvalConfig:
    """Offline evaluation of one checkpoint at one or more served history windows.

    Attributes:
        checkpoint: a ``step_<n>`` checkpoint folder, a pointer file
            (``<run>/checkpoints/latest`` or ``best``) or a run dir (its latest checkpoint).
            Loaded without running code from it (`longseq.parallel.safe_load`).
        windows: most-recent events served per request, one pass each; 0 (or an empty
            list) = the full stored history (`longseq.data.windows.FULL`).
        out: output folder for ``eval.json``, ``eval.md`` and ``auc_vs_window.png``.
        save_predictions: also write ``predictions.parquet/``, a folder with one part per rank
            (``part-<rank>.parquet``; one row per target/task/window).
        sharded: under torchrun, shard the embedding tables over the ranks (TorchRec DMP, the
            trainer's sharding code) instead of replicating the model on every rank: for tables
            that do not fit one process. Results equal the replicated evaluation's.
        sharding_tables: sharding type per table for ``sharded``, laid over the plan the
            trainer recorded in the checkpoint's ``longseq.json`` (key ``sharding``; older
            checkpoints: the trainer's default, ``item`` row-wise and the rest table-wise).
            ``checkpoint`` (the default for ``item``) keeps a table's recorded type; e.g.
            ``sharding_tables.item=table_wise +sharding_tables.category=row_wise`` overrides
            two tables (`longseq.eval.load.eval_sharding_config`).
    """

    checkpoint: str = MISSING
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    windows: list[int] = field(default_factory=list)
    out: str = MISSING
    save_predictions: bool = False
    progress: bool = True
    sharded: bool = False
    # {"item": "checkpoint"} rather than None or {}: ``sharding_tables.item=...`` must stay a
    # valid override without ``+`` (Hydra cannot set a key of a None or absent node)
    sharding_tables: dict[str, str] = field(default_factory=lambda: {"item": "checkpoint"})

    def validate(self) -> None:
        """Every check of the settings that needs no checkpoint or data, run once by
        `longseq.eval.evaluate.evaluate`; raises ``ValueError`` naming the key. (The sharding
        types of ``sharding_tables`` are checked with the checkpoint's recorded plan, when the
        tables are sharded: `longseq.eval.load.load_sharded_model`.)"""
        if not self.checkpoint:
            raise ValueError("checkpoint must be set (a checkpoint folder, pointer or run dir)")
        if not self.out:
            raise ValueError("out must be set (the folder of eval.json)")
        check_served_windows(list(self.windows), "windows")
        self.data.validate("data")


def register() -> None:
    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
