"""`TargetAttention`: one layer's target attention as a module (its weights, biases and count
channel), computed by the kernel of `longseq.model.ops` it is given.

One query per target over its request's encoded history (paper §1, §9), split for serving into
`TargetAttention.project` (the history side: the layer's part of the user state) and
`TargetAttention.attend` (the targets' queries over a given state); ``forward`` is both in one
module call. The kernel is chosen in one place, `longseq.model.ops.dispatch.target_attention`.
`reference_attention` is the readable per-target, per-head loop of the whole layer (biases and
count channel included) the layer's tests compare against. Pure torch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from longseq.model.match import GAIN, AttentionBias
from longseq.model.ops.dispatch import Projected, project_history, target_attention
from longseq.model.ops.history import PackedHistory, PaddedHistory
from longseq.model.ops.kernels import Kernel
from longseq.model.ops.padded import AbsorbedKV
from longseq.model.ops.tables import TableHistory

__all__ = ["Projected", "TargetAttention", "reference_attention"]


class TargetAttention(nn.Module):
    """Multi-head single-query cross-attention of each target over its request's history.

    Args:
        d: width; ``heads`` must divide it.
        heads: attention heads ``h``.
        kernel: the default `longseq.model.ops.kernels.Kernel` of `project` / `attend` (a call
            may name another of the same state form, e.g. ``flex`` on a ``pairs`` state).
        bias: the layer's optional match/position biases and count channel (`AttentionBias`).

    The same weights serve every kernel and layout. Padded calls take ``q [B, T, d]`` and a
    `PaddedHistory`; packed calls ``q [N, d]`` and a `PackedHistory`.
    """

    def __init__(
        self, d: int, heads: int, kernel: str = "kv", bias: AttentionBias | None = None
    ) -> None:
        super().__init__()
        self.d, self.h, self.dh = d, heads, d // heads
        self.kernel = Kernel(kernel)
        self.w_q = nn.Linear(d, d, bias=False)
        self.w_k = nn.Linear(d, d, bias=False)
        self.w_v = nn.Linear(d, d, bias=False)
        self.w_o = nn.Linear(d, d, bias=False)
        self.bias = bias

    def project(self, x: torch.Tensor, kernel: str | None = None) -> Projected:
        """The history side of this layer, once per request: its part of the user state.

        ``x``: the encoded history ``X̃``, ``[B, L, d]`` (padded) or ``[E, d]`` (packed); the
        form is the kernel's (`longseq.model.ops.dispatch.project_history`).
        """
        kernel = self.kernel if kernel is None else Kernel(kernel)
        return project_history(kernel, x, self.w_k, self.w_v, self.h)

    def attend(
        self,
        q: torch.Tensor,
        state: Projected,
        history: PaddedHistory | PackedHistory | TableHistory,
        kernel: str | None = None,
    ) -> torch.Tensor:
        """Queries ``q [B, T, d]`` (padded) or ``[N, d]`` (packed) over ``state = project(X̃)``
        -> the same shape; ``history`` holds the layout and the inputs of the layer's bias."""
        kernel = self.kernel if kernel is None else Kernel(kernel)
        lead = q.shape[:-1]
        qh = self.w_q(q).view(*lead, self.h, self.dh)
        bias = None if self.bias is None else history.logit_bias(self.bias)
        kv: Projected | AbsorbedKV = state
        if kernel is Kernel.ABSORBED:  # the kernel folds W_K / W_V into the query and output
            assert isinstance(state, torch.Tensor)  # this kernel's state is the history itself
            kv = AbsorbedKV(state, self.w_k.weight, self.w_v.weight)
        o = target_attention(kernel, qh, kv, history, bias)
        out = self.w_o(o.reshape(*lead, self.d))
        if self.bias is not None and self.bias.count:
            out = out + history.count(self.bias)
        return out

    def forward(
        self,
        q: torch.Tensor,
        x: torch.Tensor,
        history: PaddedHistory | PackedHistory,
        kernel: str | None = None,
    ) -> torch.Tensor:
        """``attend(q, project(x), history)`` in one module call.

        Both layouts go through this forward, so module hooks (FSDP2's parameter gathering,
        activation checkpointing) see the history projection and the attention together.
        """
        kernel = self.kernel if kernel is None else Kernel(kernel)
        return self.attend(q, self.project(x, kernel), history, kernel)


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
                pe = None
                if bias is not None and positions is not None and hasattr(bias, "pos"):
                    pe = bias.pos(positions[i][hist_mask[i]]).to(s.dtype)
                if bias is not None and bias.position_bias:
                    assert pe is not None  # the position bias needs the positions
                    s = s + GAIN * (pe @ bias.pos_w.weight[r])
                heads.append(torch.softmax(s, dim=0) @ vr)
                if bias is not None and bias.count:  # matches of each id feature, windowed
                    assert pe is not None and match is not None  # the count channel needs both
                    g = torch.sigmoid(GAIN * (pe @ bias.count_pos_w.weight[r] + bias.count_tau[r]))
                    m = match[i, j][hist_mask[i]].to(s.dtype)  # [L_i, F]
                    counts.append(torch.log1p(g @ m))
            out[i, j] = attn.w_o(torch.cat(heads))
            if bias is not None and bias.count:
                out[i, j] = out[i, j] + bias.count_proj(torch.stack(counts).flatten())
    return out
