"""The one place a target-attention kernel is chosen: `target_attention(kernel, q, kv, history)`.

A layer's attention is split as serving needs it: `project_history` is its history side (once per
request: the layer's part of the user state, in the form its kernel reads) and
`target_attention` its target side (per-head queries over that state). `packed_history` lays a
packed batch out for a packed kernel, falling back from ``flex`` to ``pairs`` where FlexAttention
cannot run. `longseq.model.attention.TargetAttention` (the weights) calls these three and nothing
else of `longseq.model.ops`. Pure torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from longseq.model.ops.flex import flex_attention_packed, packed_batch, use_flex
from longseq.model.ops.history import PackedHistory, PaddedHistory, match_pairs
from longseq.model.ops.kernels import Kernel
from longseq.model.ops.matched import table_attention
from longseq.model.ops.padded import AbsorbedKV, absorbed_attention, kv_attention, sdpa_attention
from longseq.model.ops.pairs import pair_attention, request_pairs
from longseq.model.ops.reference import reference_attention_kernel
from longseq.model.ops.tables import TableHistory

#: one layer's part of the user state: ``(K, V)``, or the encoded history itself (``absorbed``)
Projected = tuple[torch.Tensor, torch.Tensor] | torch.Tensor

#: kernel -> its function ``(q, kv, history, bias) -> per-head outputs``
KERNELS: dict[Kernel, Callable[..., torch.Tensor]] = {
    Kernel.REFERENCE: reference_attention_kernel,
    Kernel.KV: kv_attention,
    Kernel.ABSORBED: absorbed_attention,
    Kernel.SDPA: sdpa_attention,
    Kernel.PAIRS: pair_attention,
    Kernel.FLEX: flex_attention_packed,
}


def project_history(
    kernel: Kernel, x: torch.Tensor, w_k: nn.Module, w_v: nn.Module, heads: int
) -> Projected:
    """The history side of one layer for ``kernel``: its part of the user state.

    ``x``: the encoded history ``X̃``, ``[B, L, d]`` (padded) or ``[E, d]`` (packed). Keys and
    values ``[..., h, d_h]`` each (``sdpa``: heads first, ``[B, h, L, d_h]``, as SDPA takes
    them); ``absorbed`` keeps ``X̃`` itself (the kernel never builds keys/values). Both packed
    kernels read the same ``(K, V)``, so a packed state scores with either.
    """
    if kernel is Kernel.ABSORBED:
        return x
    lead, dh = x.shape[:-1], x.shape[-1] // heads
    k = w_k(x).view(*lead, heads, dh)  # once per request
    v = w_v(x).view(*lead, heads, dh)
    if kernel is Kernel.SDPA:
        return k.transpose(1, 2), v.transpose(1, 2)
    return k, v


def target_attention(
    kernel: Kernel,
    q: torch.Tensor,
    kv: Projected | AbsorbedKV,
    history: PaddedHistory | PackedHistory | TableHistory,
    bias=None,  # noqa: ANN001 - the history's `logit_bias` form for this kernel
) -> torch.Tensor:
    """Per-head queries ``q`` over a layer's history side ``kv`` -> per-head outputs.

    Padded: ``q [B, T, h, d_h]``, ``kv`` as `project_history` made it (``absorbed``: an
    `AbsorbedKV`), a `PaddedHistory`, ``bias [B, h, T | 1, L]`` -> ``[B, T, h, d_h]``. Packed:
    ``q [N, h, d_h]``, ``kv = (K, V)`` ``[E, h, d_h]`` each, a `PackedHistory` laid out for this
    kernel (`packed_history`), ``bias`` ``[P, h]`` (``pairs``) or the ``flex`` score terms ->
    ``[N, h, d_h]``. ``bias``: `PaddedHistory.logit_bias` / `PackedHistory.logit_bias` of the
    layer's `longseq.model.match.AttentionBias`, or None. A `TableHistory` (one request's
    state indexed by id; ``kv``, ``sdpa`` or ``reference`` keys and values) runs
    `longseq.model.ops.matched.table_attention` whatever the kernel: the same function.
    """
    kernel = Kernel(kernel)
    if isinstance(history, TableHistory):  # one request's state indexed by id (serving)
        if kernel not in (Kernel.KV, Kernel.SDPA, Kernel.REFERENCE):
            raise ValueError(
                f"a TableHistory needs keys and values (kv, sdpa, reference), not {kernel}"
            )
        assert isinstance(kv, tuple) and not isinstance(kv, AbsorbedKV)  # those kernels' (K, V)
        return table_attention(q, (kv[0], kv[1]), history, bias, heads_first=kernel is Kernel.SDPA)
    want = PaddedHistory if kernel.layout == "padded" else PackedHistory
    if not isinstance(history, want):
        raise TypeError(
            f"the {kernel} kernel takes a {want.__name__}, got {type(history).__name__}"
        )
    laid_out = {Kernel.PAIRS: "pairs", Kernel.FLEX: "batch"}.get(kernel)
    if laid_out and getattr(history, laid_out) is None:
        raise ValueError(f"this PackedHistory is not laid out for the {kernel} kernel")
    return KERNELS[kernel](q, kv, history, bias)


def packed_history(
    kernel: Kernel,
    lengths: torch.Tensor,
    num_targets: torch.Tensor,
    like: torch.Tensor,
    positions: torch.Tensor | None = None,
    hist_ids: torch.Tensor | None = None,
    tgt_ids: torch.Tensor | None = None,
    count: bool = False,
) -> tuple[Kernel, PackedHistory]:
    """The kernel that runs and the packed batch laid out for it.

    ``flex`` runs where FlexAttention can (`use_flex` of ``like``, the targets' tokens: CUDA, or
    CPU without autograd) and the batch has targets and requests; otherwise ``pairs`` (the same
    function). ``hist_ids [E, F]`` / ``tgt_ids [N, F]``: for the match bias (and ``count``: the
    count channel's id tables); ``positions [E]``: for the position bias and count window.
    """
    kernel = Kernel(kernel)
    if kernel.layout != "packed":
        raise ValueError(f"{kernel} is a padded kernel; the packed ones are pairs and flex")
    n = like.shape[0]
    if kernel is Kernel.FLEX and use_flex(like) and n and lengths.numel():
        batch = packed_batch(lengths, num_targets, hist_ids, tgt_ids, positions, count)
        return Kernel.FLEX, PackedHistory(lengths, num_targets, n, positions, batch=batch)
    pairs = request_pairs(lengths, num_targets)  # once for all layers
    match = None if hist_ids is None or tgt_ids is None else match_pairs(hist_ids, tgt_ids, *pairs)
    return Kernel.PAIRS, PackedHistory(
        lengths,
        num_targets,
        n,
        positions,
        pairs=pairs,
        match=match,
        pair_positions=None if positions is None else positions[pairs[1]],
    )
