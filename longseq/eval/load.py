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
from typing import Any

import torch
from torch import nn

from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel, model_config_from_saved


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder; a pointer file (``<run>/checkpoints/latest`` or ``best``), a
    checkpoints folder or a run dir resolve to the checkpoint they name."""
    from longseq.parallel.pointers import resolve_checkpoint as resolve

    try:
        return resolve(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"checkpoint={e}") from None


def build_model(meta: dict[str, Any], device: str | torch.device = "cpu") -> LongSeqModel:
    """The model ``longseq.json`` describes, with fresh weights."""
    mcfg = model_config_from_saved(meta["model"])
    return LongSeqModel(mcfg, TableSizes(**meta["tables"]), meta["tasks"], device=device)


def load_model(ckpt: Path, meta: dict[str, Any]) -> LongSeqModel:
    """The checkpoint's model in this process (every table whole), in eval mode."""
    from longseq.parallel.checkpoint import load_checkpoint

    model = build_model(meta)
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


def load_sharded_model(
    ckpt: Path, meta: dict[str, Any], tables: dict[str, str] | None = None
) -> LongSeqModel:
    """The checkpoint's model with its tables sharded over the current process group.

    Args:
        ckpt: a complete checkpoint folder.
        meta: its ``longseq.json``.
        tables: sharding type per table (``ShardingConfig.tables``); None: the trainer's default.

    Returns the `LongSeqModel` inside the DMP wrapper (its ``ec`` is the sharded collection), in
    eval mode. Collective: call on every rank.
    """
    from longseq.parallel.checkpoint import load_checkpoint, load_model_state_dict, model_state_dict
    from longseq.parallel.sharding import ShardingConfig
    from longseq.parallel.wrap import shard_model

    model = build_model(meta, device="meta")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device("cpu")
    cfg = ShardingConfig() if tables is None else ShardingConfig(tables=dict(tables))
    cfg.validate(device.type)
    dmp = shard_model(_Holder(model), cfg, device)
    state = {"model": model_state_dict(dmp)}
    load_checkpoint(ckpt, state)
    load_model_state_dict(dmp, state["model"])
    dmp.eval()
    return model.eval()
