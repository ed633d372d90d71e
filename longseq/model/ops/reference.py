"""The reference kernel: one readable loop per request, target and head (padded layout).

What every kernel computes, written without batching, masking tricks or fused calls: for target
``j`` of request ``i`` and head ``r``, ``softmax(K_ir q_ijr / √d_h + bias_irj) V_ir`` over the
request's events only, and zeros when it has none. The parity test over every kernel
(tests/model/test_ops.py) compares against it; it is also a kernel of its own
(``model.stca.kernel=reference``: exact, and slow). Pure torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from longseq.model.ops.history import PaddedHistory


def reference_attention_kernel(
    q: torch.Tensor,
    kv: tuple[torch.Tensor, torch.Tensor],
    history: PaddedHistory,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``q [B, T, h, d_h]`` over keys and values ``[B, L, h, d_h]`` each (``bias``
    ``[B, h, T | 1, L]`` or None) -> ``[B, T, h, d_h]``."""
    b, t, h, dh = q.shape
    k, v = kv
    out = torch.zeros_like(q)
    for i in range(b):
        events = slice(None) if history.mask is None else history.mask[i]
        ki, vi = k[i][events], v[i][events]  # [L_i, h, d_h]: this request's events only
        if ki.shape[0] == 0:
            continue  # no history: zeros
        for j in range(t):
            for r in range(h):
                s = ki[:, r] @ q[i, j, r] / math.sqrt(dh)  # [L_i]
                if bias is not None:
                    s = s + bias[i, r, min(j, bias.shape[2] - 1)][events]
                out[i, j, r] = torch.softmax(s, dim=0) @ vi[:, r]
    return out
