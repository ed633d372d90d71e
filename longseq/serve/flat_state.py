"""A tower's user state as a flat tuple of tensors, and back: what an exported graph takes.

Every tower's `UserState` is a dataclass of tensors, ``None`` and lists/tuples of tensors (STCA:
per layer ``(K, V)`` or ``X̃``; DIN: the projected history and its mask; ...). `flatten_state`
lists its tensors depth-first in field order; `structure` keeps the shape of the dataclass with
each tensor replaced by a placeholder, and `unflatten_state` puts tensors back into it.

Fields named ``hist_mask`` (the padding mask of STCA, SIM and the transformer) are dropped: an
exported state holds no padding (one request per state, or requests of equal history length
stacked), and the towers read ``hist_mask=None`` as "every slot is an event" without a
data-dependent check, which a traced graph could not hold. Masks a tower computes itself
(DIN's ``mask`` of the events it attends to) stay inputs. STCA's ``tables`` (its events indexed by
id, `longseq.model.ops.tables`: data-dependent sizes and loops, which a graph cannot hold) are
dropped too: an exported graph scores with the dense match bias, the same function.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch

#: state fields left out of the flat form (see the module doc)
DROPPED = ("hist_mask", "tables")
_SLOT = "<tensor>"


def _leaves(obj: Any, name: str) -> list[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        return [(name, obj)]
    if isinstance(obj, list | tuple):
        return [leaf for i, x in enumerate(obj) for leaf in _leaves(x, f"{name}_{i}")]
    if is_dataclass(obj) and not isinstance(obj, type):
        return [
            leaf
            for f in fields(obj)
            if f.name not in DROPPED
            for leaf in _leaves(getattr(obj, f.name), f.name if not name else f"{name}.{f.name}")
        ]
    return []  # None and non-tensor values


def named_leaves(state: Any) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every tensor of ``state`` in flat order (``layers_0_1``: field
    ``layers``, item 0, item 1)."""
    return _leaves(state, "")


def flatten_state(state: Any) -> tuple[torch.Tensor, ...]:
    """The tensors of ``state`` in flat order (`DROPPED` fields left out)."""
    return tuple(t for _, t in named_leaves(state))


def structure(state: Any) -> Any:
    """``state`` with every tensor replaced by a placeholder (and `DROPPED` fields ``None``):
    what `unflatten_state` fills; holds no tensor, so a module may keep it as an attribute."""
    if isinstance(state, torch.Tensor):
        return _SLOT
    if isinstance(state, list | tuple):
        return type(state)(structure(x) for x in state)
    if is_dataclass(state) and not isinstance(state, type):
        return replace(
            state,
            **{
                f.name: None if f.name in DROPPED else structure(getattr(state, f.name))
                for f in fields(state)
            },
        )
    return state


def unflatten_state(spec: Any, tensors: tuple[torch.Tensor, ...]) -> Any:
    """The state of `structure` ``spec`` with ``tensors`` (flat order) put back."""
    it = iter(tensors)

    def fill(obj: Any) -> Any:
        if isinstance(obj, str) and obj == _SLOT:
            return next(it)
        if isinstance(obj, list | tuple):
            return type(obj)(fill(x) for x in obj)
        if is_dataclass(obj) and not isinstance(obj, type):
            return replace(obj, **{f.name: fill(getattr(obj, f.name)) for f in fields(obj)})
        return obj

    out = fill(spec)
    if next(it, None) is not None:
        raise ValueError("more state tensors than the state has slots")
    return out
