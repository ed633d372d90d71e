"""Activation checkpointing of a tower's per-layer modules, applied from outside the model.

``trainer.activation_checkpointing=tower_layers`` marks every module the tower lists in its
``checkpoint_layers()`` (`longseq.model.tower.SequenceTower`; for STCA each layer's history FFN on
``[B, L, d]``, its attention, with the keys/values and the ``[B, h, T, L]`` scores, and its
query-fusion FFN) with torch's composable ``checkpoint`` (non-reentrant
``torch.utils.checkpoint`` driven by forward hooks): their inner activations are dropped after
forward and recomputed in backward. Parameter names do not change (no wrapper module), so
checkpoints, optimizer state keys, FSDP2 and TorchRec's pipeline tracing are unaffected.
Apply it before sharding (`longseq.parallel.wrap.shard_model`), as torchtitan applies AC before
``fully_shard``. ``stca_layers`` is the mode's earlier name and still selects it.
"""

from __future__ import annotations

from torch import nn

#: ``none``, ``tower_layers``, and ``stca_layers`` (the earlier name of ``tower_layers``)
AC_MODES = ("none", "tower_layers", "stca_layers")


def apply_activation_checkpointing(
    model: nn.Module, mode: str, key: str = "trainer.activation_checkpointing"
) -> list[str]:
    """Checkpoint the towers' layer modules of ``model`` per ``mode``; returns their names."""
    from torch.distributed._composable import checkpoint

    from longseq.model.tower import SequenceTower

    if mode not in AC_MODES:
        raise ValueError(f"{key}={mode!r}: choose one of {AC_MODES}")
    if mode == "none":
        return []
    names = {id(m): n for n, m in model.named_modules()}
    towers = [m for m in model.modules() if isinstance(m, SequenceTower)]
    layers = [layer for tower in towers for layer in tower.checkpoint_layers()]
    if not layers:
        kinds = ", ".join(type(t).__name__ for t in towers) or "no SequenceTower"
        raise ValueError(
            f"{key}={mode}: the model's tower lists no layers to checkpoint ({kinds}: its "
            "checkpoint_layers() is empty); use none"
        )
    for layer in layers:
        checkpoint(layer)
    return [names[id(layer)] for layer in layers]
