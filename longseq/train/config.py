"""Typed configs of a training job, registered with Hydra's ConfigStore as ``train_schema``.

Each component receives only its own section (``data``, ``model``, ``sharding``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from longseq.data.config import DataConfig
from longseq.data.windows import check_served_windows
from longseq.model.model import ModelConfig
from longseq.parallel.planning.topology import TopologyConfig
from longseq.parallel.sharding import ShardingConfig
from longseq.train.optim import DenseOptimConfig, check_rate


@dataclass
class TrainerConfig:
    """The loop: length, logging, checkpointing, evaluation.

    ``pipeline``: TorchRec's TrainPipelineSparseDist (input all-to-all of the next batch
    overlapped with this one; an error if it cannot pipeline the embeddings), or the plain loop.
    ``profile``: a torch.profiler trace of steps 4-6 to ``<run_dir>/profile/``.
    ``eval_every`` (a multiple of ``checkpoint_every``; 0 = never mid-run; -1, the default =
    every ``checkpoint_every`` steps when the data set has a ``valid/`` split, else never)
    evaluates checkpoints during training with the offline evaluation code at ``eval_windows`` on
    ``select_split`` (``auto``: ``valid`` when the data has it, else ``eval_split``); each such
    evaluation is a candidate for ``checkpoints/best``. ``eval_at_end`` evaluates
    ``checkpoints/best`` (the final checkpoint when none was evaluated) on ``eval_split``.
    ``early_stop_patience``: stop after this many mid-run evaluations in a row without a new
    best (0 = never stop early; no effect without mid-run evaluations).
    ``precision``: ``fp32``, or ``bf16`` (autocast around the model's forward, loss in float32;
    meant for GPUs, on CPU it runs torch's CPU autocast).
    ``activation_checkpointing``: ``none``, or ``tower_layers`` (recompute the layers the tower
    names in ``checkpoint_layers()``, for STCA each layer's history FFN, attention and
    query-fusion FFN, in backward; `longseq.parallel.ac`; ``stca_layers`` is its earlier name).
    ``keep_last`` (>= 1): checkpoints kept besides the one ``checkpoints/best`` names.
    ``best_metric``: the ``metrics.jsonl`` key that picks ``checkpoints/best`` among the evaluated
    checkpoints (``eval/{auc,gauc}/...``: higher is better, ``eval/nll/...``: lower); empty =
    ``eval/auc/<first task>@<largest eval window>``.
    ``progress``: a progress bar when stderr is a terminal (otherwise one log line per
    ``log_every`` steps either way).
    ``metrics_window``: training AUC/NE (``train/auc/<task>``, ``train/ne/<task>``) over the
    most recent this many targets (all ranks together); 0 = off.
    ``tensorboard``: also write the logged values to ``<run_dir>/tensorboard`` (rank 0).
    """

    max_steps: int = 200
    log_every: int = 10
    checkpoint_every: int = 100
    keep_last: int = 3
    progress: bool = True
    pipeline: bool = True
    profile: bool = False
    eval_every: int = -1
    eval_at_end: bool = False
    eval_windows: list[int] = field(default_factory=list)
    eval_split: str = "test"
    select_split: str = "auto"
    early_stop_patience: int = 3
    precision: str = "fp32"
    activation_checkpointing: str = "none"
    best_metric: str = ""
    metrics_window: int = 10_000
    tensorboard: bool = False
    dense: DenseOptimConfig = field(default_factory=DenseOptimConfig)

    def resolved_eval(self, data_path: str) -> tuple[int, str]:
        """``(eval_every, select_split)`` with ``-1`` and ``auto`` resolved against the data set:
        mid-run evaluation every ``checkpoint_every`` steps on ``valid`` when ``<data_path>/valid``
        exists; without it, never mid-run (``eval_every=-1``) or on ``eval_split``."""
        has_valid = (Path(data_path) / "valid").is_dir()
        every = self.eval_every
        if every == -1:
            every = self.checkpoint_every if has_valid else 0
        split = self.select_split
        if split == "auto":
            split = "valid" if has_valid else self.eval_split
        return every, split

    def validate(self, device_type: str, prefix: str = "trainer") -> None:
        """Raise ``ValueError`` naming the key for settings that cannot work here."""
        from longseq.parallel.ac import AC_MODES
        from longseq.train.task import validate_precision

        validate_precision(self.precision, device_type, f"{prefix}.precision")
        for key in ("max_steps", "log_every", "checkpoint_every", "keep_last"):
            if getattr(self, key) < 1:
                raise ValueError(f"{prefix}.{key} must be >= 1, got {getattr(self, key)}")
        if self.metrics_window < 0:
            raise ValueError(
                f"{prefix}.metrics_window must be >= 0 (0 = off), got {self.metrics_window}"
            )
        if self.eval_every < -1:
            raise ValueError(
                f"{prefix}.eval_every must be >= -1 (-1 = every checkpoint when the data has a "
                f"valid split, 0 = never mid-run), got {self.eval_every}"
            )
        if self.early_stop_patience < 0:
            raise ValueError(
                f"{prefix}.early_stop_patience must be >= 0 (evaluations without a new best; "
                f"0 = off), got {self.early_stop_patience}"
            )
        if not self.select_split or not self.eval_split:
            raise ValueError(
                f"{prefix}.select_split / {prefix}.eval_split must name a split of the data set "
                f"(select_split may be auto), got {self.select_split!r} / {self.eval_split!r}"
            )
        if self.eval_every > 0 and self.eval_every % self.checkpoint_every:
            raise ValueError(
                f"{prefix}.eval_every ({self.eval_every}) must be a multiple of "
                f"{prefix}.checkpoint_every ({self.checkpoint_every}): evaluation reads checkpoints"
            )
        check_served_windows(list(self.eval_windows), f"{prefix}.eval_windows")
        m = self.best_metric
        if m and not m.startswith(("eval/auc/", "eval/gauc/", "eval/nll/")):
            raise ValueError(
                f"{prefix}.best_metric={m!r}: an eval/auc/..., eval/gauc/... or eval/nll/... key "
                "of metrics.jsonl (e.g. eval/auc/click@250), or empty for the default"
            )
        self.dense.validate(f"{prefix}.dense")
        if self.activation_checkpointing not in AC_MODES:
            raise ValueError(
                f"{prefix}.activation_checkpointing={self.activation_checkpointing!r}: "
                f"choose one of {AC_MODES}"
            )


@dataclass
class WandbConfig:
    """Weights & Biases: ``mode`` is disabled | offline | online."""

    mode: str = "disabled"
    project: str = "longseq"
    entity: str | None = None


@dataclass
class TrainJobConfig:
    """A whole training job (what ``python -m longseq.train`` composes)."""

    name: str = "run"
    run_dir: str = MISSING
    resume: str = "none"  # none | auto | <checkpoint dir>
    #: start over in a run dir that holds checkpoints (they are deleted first); without it such
    #: a run dir needs ``resume=auto`` (`longseq.train.guards.prepare_run_dir`)
    overwrite: bool = False
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    dry_run: bool = False
    dry_run_topology: TopologyConfig = field(default_factory=TopologyConfig)

    def validate(self, device_type: str) -> None:
        """Every check of the job's settings that needs no data or cluster, in one place; raises
        ``ValueError`` naming the config key (``trainer.*``, ``data.*``, ``sharding.*``).
        ``device_type``: ``cpu`` or ``cuda``, what this process trains on."""
        if not self.run_dir:
            raise ValueError("run_dir must be set (the folder of checkpoints and metrics)")
        if Path(self.run_dir).exists() and not Path(self.run_dir).is_dir():
            raise ValueError(f"run_dir={self.run_dir} is a file, not a folder: choose a folder")
        if self.overwrite and self.resume == "auto":
            raise ValueError(
                "overwrite=true and resume=auto contradict each other: resume=auto continues the "
                "run dir's checkpoints, overwrite=true deletes them; choose one"
            )
        self.trainer.validate(device_type, "trainer")
        self.data.validate("data")  # includes data.window
        self.sharding.validate(device_type, "sharding")
        check_rate(self.sharding.sparse_lr, "sharding.sparse_lr")
        if self.wandb.mode not in ("disabled", "offline", "online", "", None):
            raise ValueError(f"wandb.mode must be disabled|offline|online, got {self.wandb.mode!r}")


def register() -> None:
    """Register ``train_schema`` with Hydra's ConfigStore."""
    ConfigStore.instance().store(name="train_schema", node=TrainJobConfig)
