"""Mean pooling of the history: the simplest target-unaware baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from longseq.model.layers import FFNStack
from longseq.model.tower import SequenceTower, UserState


@dataclass
class MeanPoolingConfig:
    """Hyper-parameters of `MeanPoolingTower`.

    Attributes:
        d_model: width ``d`` of history/target tokens and of the output.
        ffn_ratio: SwiGLU hidden width of the output FFN as a multiple of ``d``.
    """

    d_model: int = 64
    ffn_ratio: float = 2.0

    def validate(self, prefix: str = "model.pooling") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if self.d_model < 1:
            raise ValueError(f"{prefix}.d_model must be >= 1, got {self.d_model}")
        if self.ffn_ratio <= 0:
            raise ValueError(f"{prefix}.ffn_ratio must be > 0, got {self.ffn_ratio}")


@dataclass
class PooledState(UserState):
    """`MeanPoolingTower`'s user state: the pooled history ``[B, d]``."""

    pooled: torch.Tensor


class MeanPoolingTower(SequenceTower[PooledState]):
    """``z = FFN([mean_j(W_h x_j + b) | x_t] W_z)``; an empty history pools to zeros.

    The pooled vector is the user state: computed once per request, broadcast to its targets.
    """

    def __init__(self, cfg: MeanPoolingConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d = cfg.d_model
        self.hist_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(2 * d, d, bias=False)
        self.out_ffn = FFNStack(d, d, cfg.ffn_ratio, 1, residual=True)

    def encode_user(
        self, hist: torch.Tensor, hist_mask: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> PooledState:
        """``hist [B,L,d]``, ``hist_mask [B,L]`` bool -> the masked mean ``[B, d]``."""
        m = hist_mask.unsqueeze(-1)
        h = torch.where(m, self.hist_proj(hist), 0.0)
        return PooledState(h.sum(1) / m.sum(1).clamp(min=1).to(h.dtype))

    def score(
        self, state: PooledState, tgt: torch.Tensor, tgt_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tgt [B,T,d]`` -> ``z [B,T,d]``."""
        pooled = state.pooled.unsqueeze(1).expand(-1, tgt.shape[1], -1)
        return self.out_ffn(self.out_proj(torch.cat([pooled, tgt], dim=-1)))
