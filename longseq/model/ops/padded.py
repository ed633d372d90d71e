"""The padded layout's kernels: ``kv`` and ``absorbed`` (einsum + masked softmax) and ``sdpa``.

Shapes: ``B`` requests, ``L`` history slots, ``T`` target slots, ``h`` heads of width ``d_h``.
Every kernel takes the per-head queries ``q [B, T, h, d_h]``, its form of the layer's history
side ``kv`` (`longseq.model.ops.dispatch.project_history`), a
`longseq.model.ops.history.PaddedHistory` and the layer's logit bias (``[B, h, T | 1, L]`` or
None), and returns the per-head outputs ``[B, T, h, d_h]``; a request with no event gets zeros.
Pure torch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from longseq.model.ops.history import PaddedHistory


class AbsorbedKV(NamedTuple):
    """What the ``absorbed`` kernel reads: the encoded history ``x [B, L, d]`` (the layer's
    state) and the key / value projections ``[d, d]`` it folds into the query and output."""

    x: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor


def all_valid(hist_mask: torch.Tensor | None) -> bool:
    """Whether every history slot is an event: ``hist_mask=None`` says so without a data-dependent
    check (what a traced or exported graph passes for a state without padding)."""
    return hist_mask is None or bool(hist_mask.all())


def mask_scores(scores: torch.Tensor, hist_mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over history positions; rows with an empty history get all-zero weights."""
    if hist_mask is None or all_valid(hist_mask):  # every slot valid: no mask to apply
        return torch.softmax(scores, dim=-1)
    m = hist_mask[:, None, None, :]  # [B,1,1,L]
    scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * m


def kv_attention(
    q: torch.Tensor,
    kv: tuple[torch.Tensor, torch.Tensor],
    history: PaddedHistory,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``kv``: keys and values ``[B, L, h, d_h]`` each, einsum scores, masked softmax."""
    k, v = kv
    scores = torch.einsum("bthe,blhe->bhtl", q, k) * (1.0 / math.sqrt(q.shape[-1]))
    scores = scores if bias is None else scores + bias
    return torch.einsum("bhtl,blhe->bthe", mask_scores(scores, history.mask), v)


def absorbed_attention(
    q: torch.Tensor, kv: AbsorbedKV, history: PaddedHistory, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``absorbed``: ``u = q W_Kᵀ`` per head, scores ``u X̃ᵀ``, then ``(α X̃) W_V`` (paper §1.6):
    never builds the ``L x d`` keys and values."""
    _, _, h, dh = q.shape
    x = kv.x
    wk = kv.w_k.view(h, dh, x.shape[-1])
    wv = kv.w_v.view(h, dh, x.shape[-1])
    u = torch.einsum("bthe,hed->bthd", q, wk)
    scores = torch.einsum("bthd,bld->bhtl", u, x) * (1.0 / math.sqrt(dh))
    scores = scores if bias is None else scores + bias
    ctx = torch.einsum("bhtl,bld->bthd", mask_scores(scores, history.mask), x)
    return torch.einsum("bthd,hed->bthe", ctx, wv)


def sdpa_attention(
    q: torch.Tensor,
    kv: tuple[torch.Tensor, torch.Tensor],
    history: PaddedHistory,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sdpa``: keys and values ``[B, h, L, d_h]`` (heads first, as SDPA takes them) through
    ``scaled_dot_product_attention``.

    A boolean mask costs SDPA its fastest kernels (measured 2.7x at 8k events, 16 targets), so
    it is only built when some slot is padding. An empty history attends to one dummy slot and
    its output is zeroed.
    """
    k, v = kv
    qh, hist_mask = q.transpose(1, 2), history.mask
    if hist_mask is None or all_valid(hist_mask):
        return F.scaled_dot_product_attention(qh, k, v, attn_mask=bias).transpose(1, 2)
    has = hist_mask.any(1)
    mask = hist_mask.clone()
    mask[:, 0] |= ~has
    attn_mask = mask[:, None, None, :]
    if bias is not None:
        attn_mask = bias.masked_fill(~attn_mask, torch.finfo(bias.dtype).min)
    o = F.scaled_dot_product_attention(qh, k, v, attn_mask=attn_mask)
    return (o * has[:, None, None, None].to(o.dtype)).transpose(1, 2)
