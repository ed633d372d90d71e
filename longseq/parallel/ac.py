"""Activation checkpointing of the STCA tower's per-layer modules, applied from outside the model.

``trainer.activation_checkpointing=stca_layers`` marks every element of the tower's ``hist_ffn``
(history FFN on ``[B, L, d]``), ``attn`` (keys/values and the ``[B, h, T, L]`` scores) and
``fuse_ffn`` lists with torch's composable ``checkpoint`` (non-reentrant
``torch.utils.checkpoint`` driven by forward hooks): their inner activations are dropped after
forward and recomputed in backward. Parameter names do not change (no wrapper module), so
checkpoints, optimizer state keys, FSDP2 and TorchRec's pipeline tracing are unaffected.
Apply it before sharding (`longseq.parallel.wrap.shard_model`), as torchtitan applies AC before
``fully_shard``.
"""

from __future__ import annotations

from torch import nn

AC_MODES = ("none", "stca_layers")

#: ModuleList attributes of `STCATower` whose elements are checkpointed
STCA_AC_LISTS = ("hist_ffn", "attn", "fuse_ffn")


def apply_activation_checkpointing(
    model: nn.Module, mode: str, key: str = "trainer.activation_checkpointing"
) -> list[str]:
    """Checkpoint the STCA layer modules of ``model`` per ``mode``; returns their names."""
    from torch.distributed._composable import checkpoint

    from longseq.model.stca import STCATower

    if mode not in AC_MODES:
        raise ValueError(f"{key}={mode!r}: choose one of {AC_MODES}")
    if mode == "none":
        return []
    towers = [(n, m) for n, m in model.named_modules() if isinstance(m, STCATower)]
    if not towers:
        raise ValueError(
            f"{key}={mode}: the model has no STCA tower (model.tower is not stca); use none"
        )
    done = []
    for name, tower in towers:
        for attr in STCA_AC_LISTS:
            for i, layer in enumerate(getattr(tower, attr)):
                checkpoint(layer)
                done.append(f"{name}.{attr}.{i}")
    return done
