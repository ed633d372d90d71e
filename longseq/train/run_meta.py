"""What a training run knows about its data and writes about itself: the data set's
``meta.json`` (table sizes, tasks), a checkpoint's ``longseq.json`` contents, and which checkpoint
``resume=`` names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from longseq.data.features import FeatureSpec
from longseq.data.meta import META_NAME, DatasetMeta
from longseq.model.embeddings import TableSizes
from longseq.parallel.checkpoint import latest_checkpoint
from longseq.parallel.pointers import resolve_checkpoint
from longseq.train.config import TrainJobConfig


def read_dataset_meta(path: str | Path) -> DatasetMeta:
    """The data set's ``meta.json`` (`DatasetMeta.read`), its errors naming ``data.path``."""
    try:
        return DatasetMeta.read(Path(path) / META_NAME)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"data.path={path}: {e}") from None


def table_sizes(meta: DatasetMeta) -> TableSizes:
    """The embedding table sizes of ``meta.json``'s vocabularies."""
    return TableSizes(meta.num_items, meta.num_categories, meta.num_actions)


def checkpoint_meta(
    cfg: TrainJobConfig,
    sizes: TableSizes,
    tasks: list[str],
    world_size: int,
    wandb_run_id: str | None = None,
    features: Sequence[FeatureSpec] = (),
) -> dict[str, Any]:
    """What a checkpoint's ``longseq.json`` describes (besides its step): enough for
    ``longseq.eval`` to rebuild the model without the training config. ``sharding`` records the
    training run's sharding config (evaluation may reuse the plan; a resume may change it: DCP
    reshards, so `longseq.train.guards.check_resume_compatible` does not compare it).
    ``features``: the side features the model reads (its input columns and their tables)."""
    return {
        "model": OmegaConf.to_container(OmegaConf.structured(cfg.model)),
        "tables": asdict(sizes),
        "tasks": tasks,
        "features": [f.to_dict() for f in features],
        "world_size": world_size,
        "data_path": str(cfg.data.path),
        "window": asdict(cfg.data.window),
        "pointwise": cfg.data.pointwise,
        "sharding": OmegaConf.to_container(OmegaConf.structured(cfg.sharding)),
        "wandb_run_id": wandb_run_id,
    }


def resolve_resume(cfg: TrainJobConfig) -> Path | None:
    """The checkpoint ``cfg.resume`` names: none, the run dir's latest (``auto``), a step folder
    or a ``latest``/``best`` pointer file."""
    if cfg.resume in ("none", "", None):
        return None
    if cfg.resume == "auto":
        return latest_checkpoint(cfg.run_dir)
    try:
        return resolve_checkpoint(cfg.resume)  # a step folder or a latest/best pointer file
    except FileNotFoundError:
        raise FileNotFoundError(f"resume={cfg.resume}: not a complete checkpoint") from None
