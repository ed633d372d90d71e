"""The quadratic foil: self-attention over the history, then a target-attention readout.

``N`` pre-LN encoder layers (multi-head self-attention through
``torch.nn.functional.scaled_dot_product_attention`` with the padding mask, then a SwiGLU FFN,
each with a residual) encode the history in ``O(L²)``; each target then reads the encoded history
with one multi-head single-query cross-attention, like one STCA layer. The encoder does not depend
on the targets, so it is computed once per request (request-level), like STCA's user side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from longseq.model.attention import Projected, TargetAttention
from longseq.model.layers import FFNStack, SwiGLU
from longseq.model.ops.history import PaddedHistory
from longseq.model.ops.kernels import check_kernel
from longseq.model.tower import SequenceTower, UserState


@dataclass
class TransformerConfig:
    """Hyper-parameters of `TransformerTower`.

    Attributes:
        d_model: width ``d``; divisible by ``num_heads``.
        num_heads: heads of the self-attention and of the readout.
        num_layers: encoder layers ``N`` over the history.
        ffn_ratio: SwiGLU hidden width as a multiple of ``d``.
        causal: each event attends only to itself and older events (histories are stored
            oldest to newest); False: full bidirectional self-attention.
        kernel: the target readout's attention kernel, one of the padded layout's (``kv``,
            ``absorbed``, ``sdpa``, ``reference``; `longseq.model.ops.kernels.Kernel`).
    """

    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 2
    ffn_ratio: float = 2.0
    causal: bool = False
    kernel: str = "kv"

    def validate(self, prefix: str = "model.transformer") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if self.num_heads < 1 or self.d_model % self.num_heads:
            raise ValueError(
                f"{prefix}.d_model ({self.d_model}) must be divisible by "
                f"{prefix}.num_heads ({self.num_heads} >= 1)"
            )
        if self.num_layers < 1:
            raise ValueError(f"{prefix}.num_layers must be >= 1, got {self.num_layers}")
        check_kernel(self.kernel, "padded", prefix)


class EncoderLayer(nn.Module):
    """Pre-LN block: ``x + MHSA(LN(x))`` then ``x + SwiGLU(LN(x))``."""

    def __init__(self, d: int, heads: int, ffn_ratio: float) -> None:
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.ffn = SwiGLU(d, d, ffn_ratio)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """``x [B,L,d]``; ``attn_mask`` bool, broadcastable to ``[B,h,L,L]`` (True = attend)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B,h,L,dh]
        x = x + self.out(o.transpose(1, 2).reshape(b, n, d))
        return x + self.ffn(self.ln2(x))


def self_attention_mask(hist_mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean mask for `EncoderLayer`: valid keys only (and older ones when ``causal``).

    Every query row keeps at least one key so no softmax row is empty (an empty row gives NaN,
    and a NaN in a padded slot would leak through ``0 * NaN``): padded queries of an empty
    history attend to everything (causal: to themselves); their outputs are never read.
    """
    n = hist_mask.shape[1]
    keys = hist_mask | ~hist_mask.any(1, keepdim=True)  # [B,L]
    if not causal:
        return keys[:, None, None, :]  # [B,1,1,L]
    idx = torch.arange(n, device=hist_mask.device)
    older = idx[None, :] <= idx[:, None]  # [L,L]: key j <= query i
    diag = idx[None, :] == idx[:, None]
    return ((keys[:, None, :] & older) | diag)[:, None]  # [B,1,L,L]


@dataclass
class TransformerState(UserState):
    """`TransformerTower`'s user state: the readout's projection of the self-attended history
    (`TargetAttention.project`: keys/values, or the encoded history with the ``absorbed`` kernel)
    and the mask ``[B, L]``."""

    kv: Projected
    hist_mask: torch.Tensor


class TransformerTower(SequenceTower[TransformerState]):
    """History self-attention encoder (``O(L²)``) + one target-attention readout per target.

    ``E = LN(Enc_N(..Enc_1(X)))``; ``q = LN(FFN_tgt(x_t))``; ``o = MHA(q, E)``;
    ``z = FFN_z([o | x_t] W_z)``.
    """

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.d_model
        self.layers = nn.ModuleList(
            EncoderLayer(d, cfg.num_heads, cfg.ffn_ratio) for _ in range(cfg.num_layers)
        )
        self.enc_ln = nn.LayerNorm(d)
        self.tgt_ffn = FFNStack(d, d, cfg.ffn_ratio, 1, residual=True)
        self.tgt_ln = nn.LayerNorm(d)
        self.attn = TargetAttention(d, cfg.num_heads, cfg.kernel)
        self.out_proj = nn.Linear(2 * d, d, bias=False)
        self.out_ffn = FFNStack(d, d, cfg.ffn_ratio, 1, residual=True)

    def encode_history(self, hist: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        """User side, once per request: the encoded history ``[B, L, d]``."""
        mask = self_attention_mask(hist_mask, self.cfg.causal)
        x = hist
        for layer in self.layers:
            x = layer(x, mask)
        return self.enc_ln(x)

    def encode_user(
        self, hist: torch.Tensor, hist_mask: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> TransformerState:
        """``hist [B,L,d]``, ``hist_mask [B,L]`` bool -> `TransformerState` (the ``O(L²)`` part)."""
        return TransformerState(self.attn.project(self.encode_history(hist, hist_mask)), hist_mask)

    def score(
        self, state: TransformerState, tgt: torch.Tensor, tgt_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tgt [B,T,d]`` against `TransformerState` -> ``z [B,T,d]``."""
        q = self.tgt_ln(self.tgt_ffn(tgt))
        o = self.attn.attend(q, state.kv, PaddedHistory(state.hist_mask))
        return self.out_ffn(self.out_proj(torch.cat([o, tgt], dim=-1)))
