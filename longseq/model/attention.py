"""Target attention: one query per target over its request's encoded history (paper §1, §9).

``TargetAttention`` in three exact forms (``kv``, ``absorbed``, ``sdpa``; see `longseq.model.stca`)
and two layouts (padded here, jagged in `longseq.model.jagged`), with the optional target-aware
biases and count channel of `longseq.model.match`. `reference_attention` is the readable
per-target, per-head loop every form is tested against. Pure torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from longseq.model.flex import PackedBatch
from longseq.model.jagged import jagged_attention, jagged_project
from longseq.model.match import GAIN, AttentionBias

ATTENTION_FORMS = ("kv", "absorbed", "sdpa")
#: forms of the packed (jagged) layout only: one FlexAttention call per layer
PACKED_FORMS = ("flex",)

#: one layer's part of the user state: ``(K, V)`` or the encoded history itself (``absorbed``)
Projected = tuple[torch.Tensor, torch.Tensor] | torch.Tensor


def all_valid(hist_mask: torch.Tensor | None) -> bool:
    """Whether every history slot is an event: ``hist_mask=None`` says so without a data-dependent
    check (what a traced or exported graph passes for a state without padding)."""
    return hist_mask is None or bool(hist_mask.all())


def _mask_scores(scores: torch.Tensor, hist_mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over history positions; rows with an empty history get all-zero weights."""
    if all_valid(hist_mask):  # every slot valid (fixed-length histories): no mask to apply
        return torch.softmax(scores, dim=-1)
    m = hist_mask[:, None, None, :]  # [B,1,1,L]
    scores = scores.masked_fill(~m, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * m


class TargetAttention(nn.Module):
    """Multi-head single-query cross-attention of each target over its request's history.

    Split for serving into `project` (the history side: the layer's part of the user state) and
    `attend` (the targets' queries over a given state); ``forward`` is both in one call.
    ``bias``: the layer's optional match/position biases and count channel (`AttentionBias`).
    """

    def __init__(
        self, d: int, heads: int, form: str = "kv", bias: AttentionBias | None = None
    ) -> None:
        super().__init__()
        self.d, self.h, self.dh = d, heads, d // heads
        self.form = form
        self.w_q = nn.Linear(d, d, bias=False)
        self.w_k = nn.Linear(d, d, bias=False)
        self.w_v = nn.Linear(d, d, bias=False)
        self.w_o = nn.Linear(d, d, bias=False)
        self.bias = bias

    def project(self, x: torch.Tensor, jagged: bool = False) -> Projected:
        """The history side of this layer, once per request: its part of the user state.

        Padded ``x [B,L,d]`` (the encoded history ``X̃``): ``kv`` -> ``(K, V)`` each
        ``[B,L,h,d_h]``; ``sdpa`` -> ``(K, V)`` each ``[B,h,L,d_h]``; ``absorbed`` -> ``X̃``
        itself (the form never builds keys/values). Jagged (``x [E,d]``): ``(K, V)`` each
        ``[E,h,d_h]`` whatever the form (`longseq.model.jagged`).
        """
        if jagged:
            return jagged_project(self, x)
        if self.form == "absorbed":
            return x
        b = x.shape[0]
        k = self.w_k(x).view(b, -1, self.h, self.dh)  # once per request
        v = self.w_v(x).view(b, -1, self.h, self.dh)
        if self.form == "sdpa":  # heads first, as SDPA takes them
            return k.transpose(1, 2), v.transpose(1, 2)
        return k, v

    def attend(
        self,
        q: torch.Tensor,
        state: Projected,
        hist_mask: torch.Tensor | None,
        match: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Padded: queries ``q [B,T,d]`` over ``state = project(X̃)`` with ``hist_mask [B,L]``
        (None: no padding) -> ``[B,T,d]``; ``match [B,T,L,F]`` / ``positions [B,L]`` feed the
        layer's bias."""
        b, t, _ = q.shape
        qh = self.w_q(q).view(b, t, self.h, self.dh)
        scale = 1.0 / math.sqrt(self.dh)
        bias = None if self.bias is None else self.bias.logit_bias(match, positions, padded=True)
        count = self.bias is not None and self.bias.count
        if self.form == "sdpa":
            k, v = state
            o = _sdpa(qh.transpose(1, 2), k, v, hist_mask, bias).transpose(1, 2)
        elif self.form in ("kv", *PACKED_FORMS):  # flex, padded: the same keys/values einsum
            k, v = state
            scores = torch.einsum("bthe,blhe->bhtl", qh, k) * scale
            scores = scores if bias is None else scores + bias
            o = torch.einsum("bhtl,blhe->bthe", _mask_scores(scores, hist_mask), v)
        else:  # absorbed: u = (q W_Q) W_K^T per head, then (alpha X) W_V
            x = state
            wk = self.w_k.weight.view(self.h, self.dh, self.d)
            wv = self.w_v.weight.view(self.h, self.dh, self.d)
            u = torch.einsum("bthe,hed->bthd", qh, wk)
            scores = torch.einsum("bthd,bld->bhtl", u, x) * scale
            scores = scores if bias is None else scores + bias
            ctx = torch.einsum("bhtl,bld->bthd", _mask_scores(scores, hist_mask), x)
            o = torch.einsum("bthd,hed->bthe", ctx, wv)
        out = self.w_o(o.reshape(b, t, self.d))
        if count:
            out = out + self.bias.count_padded(match, positions, hist_mask)
        return out

    def forward(
        self,
        q: torch.Tensor,
        x: torch.Tensor,
        hist_mask: torch.Tensor | None = None,
        hist_lengths: torch.Tensor | None = None,
        num_targets: torch.Tensor | None = None,
        match: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
        packed: PackedBatch | None = None,
    ) -> torch.Tensor:
        """``attend(q, project(x), ...)`` in one module call.

        Padded: ``q [B,T,d]`` queries, ``x [B,L,d]`` encoded history ``X̃``, ``hist_mask``
        -> ``[B,T,d]``. Jagged (``hist_lengths`` and ``num_targets`` given): ``q [N,d]``,
        ``x [E,d]`` -> ``[N,d]`` (`longseq.model.jagged`). Both go through this forward, so
        module hooks (FSDP2's parameter gathering, activation checkpointing) apply to both.
        ``match`` / ``positions`` feed the layer's `AttentionBias` (padded: ``[B,T,L,F]`` and
        ``[B,L]``; jagged: ``[P,F]`` and ``[E]``, with the request ``pairs``, or a
        `PackedBatch` for the FlexAttention kernel)."""
        if hist_lengths is not None:
            return jagged_attention(
                self, q, x, hist_lengths, num_targets, match, positions, pairs, packed
            )
        return self.attend(q, self.project(x), hist_mask, match=match, positions=positions)


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    hist_mask: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """``scaled_dot_product_attention`` over ``[B,h,*,*]``; no mask when every slot is valid.

    A boolean mask costs SDPA its fastest kernels (measured 2.7x at 8k events, 16 targets), so
    it is only built when some slot is padding. An empty history attends to one dummy slot and
    its output is zeroed.
    """
    if all_valid(hist_mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    has = hist_mask.any(1)
    mask = hist_mask.clone()
    mask[:, 0] |= ~has
    attn_mask = mask[:, None, None, :]
    if bias is not None:
        attn_mask = bias.masked_fill(~attn_mask, torch.finfo(bias.dtype).min)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    return o * has[:, None, None, None].to(o.dtype)


def reference_attention(
    attn: TargetAttention,
    q: torch.Tensor,
    x: torch.Tensor,
    hist_mask: torch.Tensor,
    match: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Readable per-target, per-head loop with the weights of ``attn`` (for parity tests).

    ``match [B,T,L,F]`` and ``positions [B,L]`` feed ``attn.bias`` when it has them.
    """
    b, t, d = q.shape
    bias = attn.bias
    out = torch.zeros(b, t, d, dtype=q.dtype, device=q.device)
    for i in range(b):
        xs = x[i][hist_mask[i]]  # [L_i, d]: this request's history only
        for j in range(t):
            heads, counts = [], []
            for r in range(attn.h):
                sl = slice(r * attn.dh, (r + 1) * attn.dh)
                qr = q[i, j] @ attn.w_q.weight[sl].T
                if xs.shape[0] == 0:
                    heads.append(q.new_zeros(attn.dh))
                    counts.append(q.new_zeros(bias.num_match if bias is not None else 0))
                    continue
                kr = xs @ attn.w_k.weight[sl].T
                vr = xs @ attn.w_v.weight[sl].T
                s = kr @ qr / math.sqrt(attn.dh)
                if bias is not None and bias.match_w is not None and match is not None:
                    m = match[i, j][hist_mask[i]].to(s.dtype)  # same item / category
                    s = s + m @ (GAIN * bias.match_w[:, r])
                with_pe = positions is not None and hasattr(bias, "pos")
                pe = bias.pos(positions[i][hist_mask[i]]).to(s.dtype) if with_pe else None
                if bias is not None and bias.position_bias:
                    s = s + GAIN * (pe @ bias.pos_w.weight[r])
                heads.append(torch.softmax(s, dim=0) @ vr)
                if bias is not None and bias.count:  # matches of each id feature, windowed
                    g = torch.sigmoid(GAIN * (pe @ bias.count_pos_w.weight[r] + bias.count_tau[r]))
                    m = match[i, j][hist_mask[i]].to(s.dtype)  # [L_i, F]
                    counts.append(torch.log1p(g @ m))
            out[i, j] = attn.w_o(torch.cat(heads))
            if bias is not None and bias.count:
                out[i, j] = out[i, j] + bias.count_proj(torch.stack(counts).flatten())
    return out
