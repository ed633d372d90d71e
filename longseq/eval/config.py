"""Typed config of ``python -m longseq.eval`` (registered as ``eval_schema``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class EvalDataConfig:
    """The data set folder and split to evaluate."""

    path: str = MISSING
    split: str = "test"
    batch_size: int = 64


@dataclass
class EvalConfig:
    """Offline evaluation of one checkpoint at one or more served history windows.

    Attributes:
        checkpoint: a ``step_<n>`` checkpoint folder (or a run dir: its latest checkpoint).
        windows: most-recent events served per request; empty = the full stored history.
        out: output folder for ``eval.json``, ``eval.md`` and ``auc_vs_window.png``.
        save_predictions: also write ``predictions.parquet`` (one row per target/task/window).
    """

    checkpoint: str = MISSING
    data: EvalDataConfig = field(default_factory=EvalDataConfig)
    windows: list[int] = field(default_factory=list)
    out: str = MISSING
    save_predictions: bool = False
    progress: bool = True


def register() -> None:
    ConfigStore.instance().store(name="eval_schema", node=EvalConfig)
