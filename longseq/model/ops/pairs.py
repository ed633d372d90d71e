"""The packed layout's ``pairs`` kernel: no padding of histories or targets anywhere.

The padded kernels lay a batch out as ``[B, L_max]`` events and ``[B, T_max]`` targets and mask
the holes. Here the history is the flat ``[E, d]`` token tensor of the batch (``E = sum of
history lengths``) and the targets are the flat ``[N, d]`` tensor, as the embedding lookup
returns them; the only work is on the ``P = sum_b T_b * L_b`` real (target, event) pairs of each
request. Keys and values are still computed once per event (the request-level sharing); each
pair gathers its target's query and its event's key.

Memory: the pair gather materialises ``P x d`` keys and values, ``d_h`` times the ``P x h``
scores of the padded einsum kernels; the layout pays off when lengths are very ragged (padding
would dominate), and it is the exact packed reference for the ``flex`` kernel. Pure torch, any
device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from longseq.model.ops.history import PackedHistory


def request_pairs(
    hist_lengths: torch.Tensor, num_targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pair_target, pair_event)``: every (target, event) pair of the same request.

    Targets and events are numbered in the flat (packed) order of the batch. Pairs are grouped by
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


def pair_attention(
    q: torch.Tensor,
    kv: tuple[torch.Tensor, torch.Tensor],
    history: PackedHistory,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``q [N, h, d_h]`` per-head queries over keys and values ``[E, h, d_h]`` each, on the
    pairs of ``history`` (``bias``: ``[P, h]`` or None) -> ``[N, h, d_h]``; a target whose
    request has no event gets zeros."""
    n, h, dh = q.shape
    assert history.pairs is not None, "the pairs kernel needs a history laid out for it"
    pair_t, pair_e = history.pairs
    k, v = kv
    scores = (q[pair_t] * k[pair_e]).sum(-1) / math.sqrt(dh)  # [P, h]
    scores = scores if bias is None else scores + bias
    a = segment_softmax(scores, pair_t, n)
    src = a[..., None] * v[pair_e]  # (its dtype: bf16 under autocast, where q may be fp32)
    return src.new_zeros(n, h, dh).index_add(0, pair_t, src)
