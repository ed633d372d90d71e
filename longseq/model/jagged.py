"""Jagged (packed) target attention: no padding of histories or targets anywhere.

The padded forms in `longseq.model.stca` lay a batch out as ``[B, L_max]`` events and
``[B, T_max]`` targets and mask the holes. Here the history is the flat ``[E, d]`` token tensor
of the batch (``E = sum of history lengths``) and the targets are the flat ``[N, d]`` tensor, as
the embedding lookup returns them; the only work is on the ``P = sum_b T_b * L_b`` real
(target, event) pairs of each request. Keys and values are still computed once per event (the
request-level sharing); each pair gathers its target's query and its event's key.

Memory: the pair gather materialises ``P x d`` keys and values, ``d_h`` times the ``P x h``
scores of the padded einsum forms; the layout pays off when lengths are very ragged (padding
would dominate), and it is the exact reference for a fused varlen kernel. Pure torch, any device.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from longseq.model.flex import PackedBatch, flex_attend


def request_pairs(
    hist_lengths: torch.Tensor, num_targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pair_target, pair_event)``: every (target, event) pair of the same request.

    Targets and events are numbered in the flat (jagged) order of the batch. Pairs are grouped by
    target, and within a target run over its request's events oldest to newest.
    """
    dev = hist_lengths.device
    n = int(num_targets.sum())
    req_of_target = torch.repeat_interleave(
        torch.arange(num_targets.numel(), device=dev), num_targets
    )
    per_target = hist_lengths[req_of_target]  # events each target attends to
    pair_target = torch.repeat_interleave(torch.arange(n, device=dev), per_target)
    event_start = (torch.cumsum(hist_lengths, 0) - hist_lengths)[req_of_target]
    pair_start = torch.cumsum(per_target, 0) - per_target
    within = torch.arange(int(per_target.sum()), device=dev) - pair_start[pair_target]
    return pair_target, event_start[pair_target] + within


def segment_softmax(scores: torch.Tensor, segment: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Softmax of ``scores [P, h]`` within each ``segment`` (one per target), max-subtracted."""
    h = scores.shape[1]
    top = scores.new_full((num_segments, h), float("-inf"))
    top = top.scatter_reduce(0, segment[:, None].expand(-1, h), scores, "amax")
    e = torch.exp(scores - top[segment])
    denom = scores.new_zeros(num_segments, h).index_add(0, segment, e)
    return e / denom[segment]


def jagged_project(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[E, h, d_h]`` of the flat encoded history ``x [E, d]``, once per event."""
    return attn.w_k(x).view(-1, attn.h, attn.dh), attn.w_v(x).view(-1, attn.h, attn.dh)


def jagged_attend(
    attn: nn.Module,
    q: torch.Tensor,
    kv: tuple[torch.Tensor, torch.Tensor],
    hist_lengths: torch.Tensor,
    num_targets: torch.Tensor,
    match: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    packed: PackedBatch | None = None,
) -> torch.Tensor:
    """``q [N, d]`` flat targets over ``kv = jagged_project(attn, X̃)`` -> ``[N, d]``.

    Arguments as `jagged_attention`, with the history's keys and values given.
    """
    if packed is not None:  # the same function as one FlexAttention call (`longseq.model.flex`)
        return flex_attend(attn, q, kv, packed)
    n, d = q.shape
    h, dh = attn.h, attn.dh
    pair_t, pair_e = pairs if pairs is not None else request_pairs(hist_lengths, num_targets)
    qh = attn.w_q(q).view(n, h, dh)
    k, v = kv
    scores = (qh[pair_t] * k[pair_e]).sum(-1) / math.sqrt(dh)  # [P, h]
    pos = positions[pair_e] if positions is not None else None  # each pair's event position
    if attn.bias is not None:
        bias = attn.bias.logit_bias(match, pos, padded=False)
        scores = scores if bias is None else scores + bias
    a = segment_softmax(scores, pair_t, n)
    src = a[..., None] * v[pair_e]  # (its dtype: bf16 under autocast, where q may be fp32)
    o = src.new_zeros(n, h, dh).index_add(0, pair_t, src)
    out = attn.w_o(o.reshape(n, d))
    if attn.bias is not None and attn.bias.count:
        out = out + attn.bias.count_jagged(match, pos, pair_t, n)
    return out


def jagged_attention(
    attn: nn.Module,
    q: torch.Tensor,
    x: torch.Tensor,
    hist_lengths: torch.Tensor,
    num_targets: torch.Tensor,
    match: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    packed: PackedBatch | None = None,
) -> torch.Tensor:
    """``q [N, d]`` flat targets, ``x [E, d]`` flat encoded history ``X̃`` -> ``[N, d]``.

    ``attn`` is a `longseq.model.attention.TargetAttention` (its projections, heads and bias).

    The same function as ``attn(q_padded, x_padded, mask)`` (the ``kv`` form) on the padded
    layout, with the weights of ``attn``; a target whose request has no history gets zeros.
    ``match [P, F]`` (per pair) and ``positions [E]`` (per event) feed ``attn.bias``;
    ``pairs`` are `request_pairs` when the caller already has them; with ``packed`` (a
    `longseq.model.flex.PackedBatch`) the attention is one FlexAttention call instead.
    """
    kv = jagged_project(attn, x)
    return jagged_attend(attn, q, kv, hist_lengths, num_targets, match, positions, pairs, packed)
