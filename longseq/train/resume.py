"""What a training checkpoint holds and how it is put back: model (bare `LongSeqModel` keys)
and both optimizers (fused sparse + AdamW), for any world size and dense wrapping.

DCP reshards on load: a checkpoint written by N processes (tables sharded one way, dense weights
replicated by DDP or sharded by FSDP2) loads into M processes with another plan or wrapping,
because the state is addressed by global tensor names and shapes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from longseq.parallel.checkpoint import load_checkpoint, load_model_state_dict, model_state_dict


def training_state(dmp: nn.Module, opt: Any) -> dict[str, Any]:
    """``{"model": ..., "optim": ...}``: what `save_checkpoint` writes."""
    return {"model": model_state_dict(dmp), "optim": opt.state_dict()}


def restore_training_state(dmp: nn.Module, opt: Any, ckpt: str | Path) -> dict[str, Any]:
    """Load a checkpoint into ``dmp`` and ``opt`` in place (collective); returns its
    ``longseq.json``."""
    opt.init_state()  # optimizer state tensors must exist for DCP to load into
    state = training_state(dmp, opt)
    meta = load_checkpoint(ckpt, state)
    load_model_state_dict(dmp, state["model"])
    opt.load_state_dict(state["optim"])
    return meta
