"""SIM with hard search (Pi et al., CIKM'20): retrieve by category, then target attention.

Stage 1 (General Search Unit, "hard" mode): for each target keep the history events of the
target's own category, at most the ``top_k`` most recent of them. Stage 2 (Exact Search Unit):
multi-head single-query softmax attention of the target over the retrieved events only. The
retrieval is a mask over the padded history, so request-level sharing holds: the keys and values
are computed once per request row; only the mask and the scores are per (target, event) pair.

This tower needs the category ids of the events and targets (``id_features``), which the model
passes from the batch. Its user state (`SIMState`) is the keys/values and categories of the
history; the search and the attention are per target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from longseq.model.layers import FFNStack
from longseq.model.tower import SequenceTower, UserState


@dataclass
class SIMConfig:
    """Hyper-parameters of `SIMTower`.

    Attributes:
        d_model: width ``d`` of history/target tokens and of the output.
        num_heads: heads of the target attention over the retrieved events.
        top_k: most recent same-category events kept per target (0: all of them).
        ffn_ratio: SwiGLU hidden width of the output FFN as a multiple of ``d``.
    """

    d_model: int = 64
    num_heads: int = 4
    top_k: int = 50
    ffn_ratio: float = 2.0

    def validate(self, prefix: str = "model.sim") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if self.num_heads < 1 or self.d_model % self.num_heads:
            raise ValueError(
                f"{prefix}.d_model ({self.d_model}) must be divisible by {prefix}.num_heads "
                f"({self.num_heads}) >= 1"
            )
        if self.top_k < 0:
            raise ValueError(f"{prefix}.top_k must be >= 0 (0 = all), got {self.top_k}")


def hard_search_mask(
    hist_mask: torch.Tensor, hist_cat: torch.Tensor, tgt_cat: torch.Tensor, top_k: int
) -> torch.Tensor:
    """``[B, T, L]``: event ``l`` is retrieved for target ``t`` (same category, among the last k).

    Histories are stored oldest to newest, so "most recent" counts matches from the right.
    """
    match = hist_mask[:, None, :] & (hist_cat[:, None, :] == tgt_cat[:, :, None])
    if top_k <= 0:
        return match
    newer = match.flip(-1).cumsum(-1).flip(-1)  # matches at or after each position
    return match & (newer <= top_k)


def _category(ids: torch.Tensor) -> torch.Tensor:
    """Category ids ``[B, N]`` from ``[B, N]`` or the model's ``[B, N, 1]`` ``*_ids``."""
    return ids[..., 0] if ids.dim() == 3 else ids


@dataclass
class SIMState(UserState):
    """`SIMTower`'s user state: keys/values ``[B,L,h,d_h]``, mask and categories ``[B,L]``
    (mask ``None``: no padding)."""

    k: torch.Tensor
    v: torch.Tensor
    hist_mask: torch.Tensor
    hist_cat: torch.Tensor


class SIMTower(SequenceTower[SIMState]):
    """``z = FFN([Attn(LN(x_t), retrieved events) | x_t] W_z)``.

    ``hist_ids`` / ``tgt_ids`` are the category ids: ``[B, L]`` / ``[B, T]`` (or with a
    trailing feature dim of 1, as the model passes ``id_features``).
    """

    id_features = ("category_id",)

    def __init__(self, cfg: SIMConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d, self.h = cfg.d_model, cfg.num_heads
        self.dh = d // self.h
        self.hist_ln = nn.LayerNorm(d)
        self.tgt_ln = nn.LayerNorm(d)
        self.w_q = nn.Linear(d, d, bias=False)
        self.w_k = nn.Linear(d, d, bias=False)
        self.w_v = nn.Linear(d, d, bias=False)
        self.w_o = nn.Linear(d, d, bias=False)
        self.out_proj = nn.Linear(2 * d, d, bias=False)
        self.out_ffn = FFNStack(d, d, cfg.ffn_ratio, 1, residual=True)

    def encode_user(
        self, hist: torch.Tensor, hist_mask: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> SIMState:
        """``hist [B,L,d]``, ``hist_mask [B,L]``, categories ``hist_ids`` -> `SIMState`."""
        if hist_ids is None:
            raise ValueError("SIMTower needs the events' category ids")
        b = hist.shape[0]
        x = self.hist_ln(hist)
        k = self.w_k(x).view(b, -1, self.h, self.dh)  # once per request
        v = self.w_v(x).view(b, -1, self.h, self.dh)
        return SIMState(k, v, hist_mask, _category(hist_ids))

    def score(
        self, state: SIMState, tgt: torch.Tensor, tgt_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tgt [B,T,d]``, categories ``tgt_ids`` -> ``z [B,T,d]``; a target with nothing
        retrieved attends to nothing (zero attention output)."""
        if tgt_ids is None:
            raise ValueError("SIMTower needs the targets' category ids")
        b, t, d = tgt.shape
        q = self.w_q(self.tgt_ln(tgt)).view(b, t, self.h, self.dh)
        valid = state.hist_mask  # None: no padding (an exported state; `longseq.serve.flat_state`)
        valid = torch.ones_like(state.hist_cat, dtype=torch.bool) if valid is None else valid
        keep = hard_search_mask(valid, state.hist_cat, _category(tgt_ids), self.cfg.top_k)
        keep = keep[:, None]  # [B,1,T,L]
        scores = torch.einsum("bthe,blhe->bhtl", q, state.k) / math.sqrt(self.dh)
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        a = torch.softmax(scores, dim=-1) * keep
        o = self.w_o(torch.einsum("bhtl,blhe->bthe", a, state.v).reshape(b, t, d))
        return self.out_ffn(self.out_proj(torch.cat([o, tgt], dim=-1)))
