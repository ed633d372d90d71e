"""Load a checkpointed model for scoring: one process (replicated) or tables sharded over ranks.

One module for every reader of checkpoints outside the trainer (`longseq.eval`, and serving):
the checkpoint is resolved (folder, ``latest``/``best`` pointer file or run dir), its manifest
verified, the model rebuilt from ``longseq.json`` (checkpoints written before a model switch
existed load with that switch off, `longseq.model.model.model_config_from_saved`), and the
weights loaded through `longseq.parallel.checkpoint.load_checkpoint` (metadata read by a
restricted unpickler: no code runs from the checkpoint), from whatever world size wrote it.

Sharded loading rebuilds the model the way the trainer does: tables on the meta device, sharded
by TorchRec's `DistributedModelParallel` (`longseq.parallel.wrap.shard_model`). Each lookup is
then a collective: every rank must run the same number of forwards
(`longseq.eval.predict.predict` with ``lockstep=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from longseq.data.features import parse_features
from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel, model_config_from_saved

if TYPE_CHECKING:
    from longseq.parallel.sharding import ShardingConfig

#: a ``sharding_tables`` value meaning "this table as the checkpoint's recorded plan has it"
FROM_CHECKPOINT = "checkpoint"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder; a pointer file (``<run>/checkpoints/latest`` or ``best``), a
    checkpoints folder or a run dir resolve to the checkpoint they name."""
    from longseq.parallel.pointers import resolve_checkpoint as resolve

    try:
        return resolve(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"checkpoint={e}") from None


def build_model(
    meta: dict[str, Any], device: str | torch.device = "cpu", source: str | Path = "longseq.json"
) -> LongSeqModel:
    """The model ``longseq.json`` (``meta``, read by
    `longseq.parallel.checkpoint.read_checkpoint_meta`: plain JSON, keys checked) describes,
    with fresh weights. An entry the model cannot be built from is named with ``source`` and a
    short, sanitised excerpt of the error (never the whole untrusted value)."""
    from longseq.parallel.untrusted import excerpt

    for key in ("model", "tables", "tasks"):
        if key not in meta:
            raise ValueError(f"{source}: lacks {key!r} (not a longseq checkpoint description)")
    try:
        mcfg = model_config_from_saved(meta["model"])
        features = parse_features(meta.get("features") or [], str(source))
        return LongSeqModel(
            mcfg, TableSizes(**meta["tables"]), meta["tasks"], device=device, features=features
        )
    except Exception as e:  # noqa: BLE001 - whatever the untrusted entry caused, named briefly
        raise ValueError(
            f"{source}: cannot build its model ({type(e).__name__}: {excerpt(str(e), 200)})"
        ) from None


def load_model(ckpt: Path, meta: dict[str, Any]) -> LongSeqModel:
    """The checkpoint's model in this process (every table whole), in eval mode."""
    from longseq.parallel.checkpoint import load_checkpoint

    model = build_model(meta, source=ckpt / "longseq.json")
    state = {"model": model.state_dict()}
    load_checkpoint(ckpt, state, no_dist=True)
    model.load_state_dict(state["model"])
    return model.eval()


class _Holder(nn.Module):
    """Holds the model as ``.model``, as `longseq.train.task.TrainTask` does, so that the sharded
    state dict has the trainer's key names."""

    def __init__(self, model: LongSeqModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model(batch)


def eval_sharding_config(
    meta: dict[str, Any], tables: dict[str, str] | None = None
) -> ShardingConfig:
    """The sharding of a sharded evaluation: the plan the trainer recorded, unless overridden.

    Args:
        meta: the checkpoint's ``longseq.json``; its ``sharding`` entry (the trainer's
            ``ShardingConfig`` as a dict) is the recorded plan. Checkpoints written before
            plans were recorded get the trainer's default (``item`` row-wise).
        tables: None: the recorded plan as it is (tables, planner, dense). Otherwise sharding
            types per table laid over the recorded tables (the planner is then off); a value of
            `FROM_CHECKPOINT` keeps that table's recorded type.

    The recorded sparse optimizer is not reused: scoring takes no optimizer step, and the
    default (row-wise Adagrad, on every device) only selects the fused kernel.
    """
    from longseq.parallel.sharding import ShardingConfig

    rec = meta.get("sharding") or {}
    cfg = ShardingConfig(
        tables=dict(rec.get("tables", ShardingConfig().tables)),
        planner=bool(rec.get("planner", False)),
        dense=rec.get("dense", "ddp"),
    )
    explicit = {k: v for k, v in (tables or {}).items() if v != FROM_CHECKPOINT}
    if explicit:
        cfg.tables.update(explicit)
        cfg.planner = False
    return cfg


def load_sharded_model(
    ckpt: Path, meta: dict[str, Any], tables: dict[str, str] | None = None
) -> LongSeqModel:
    """The checkpoint's model with its tables sharded over the current process group.

    Args:
        ckpt: a complete checkpoint folder.
        meta: its ``longseq.json``.
        tables: sharding type per table, laid over the checkpoint's recorded plan; None: the
            recorded plan (`eval_sharding_config`).

    Returns the `LongSeqModel` inside the DMP wrapper (its ``ec`` is the sharded collection), in
    eval mode. Collective: call on every rank.
    """
    from longseq.parallel.checkpoint import load_checkpoint, load_model_state_dict, model_state_dict
    from longseq.parallel.wrap import shard_model

    model = build_model(meta, device="meta", source=ckpt / "longseq.json")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device("cpu")
    cfg = eval_sharding_config(meta, tables)
    try:
        cfg.validate(device.type, tables_key="sharding_tables")
        cfg.check_table_names([c.name for c in model.ec.embedding_configs()], "sharding_tables")
    except ValueError as e:
        if not meta.get("sharding"):
            raise
        raise ValueError(
            f"{e} (sharding_tables lies over the checkpoint's recorded plan "
            f"{meta['sharding'].get('tables')}: override a table with sharding_tables.<name>=<type>)"
        ) from None
    dmp = shard_model(_Holder(model), cfg, device)
    state = {"model": model_state_dict(dmp)}
    load_checkpoint(ckpt, state)
    load_model_state_dict(dmp, state["model"])
    dmp.eval()
    return model.eval()
