"""DIN (Zhou et al., KDD'18): target attention with an MLP activation unit, no softmax.

For each (target ``t``, event ``h``) pair the activation unit scores ``MLP([h, t, h - t, h * t])``;
the raw score (no softmax, as in DIN) weights the event in a sum over the history. Request-level:
the first MLP layer is split by linearity, ``[h, t, h-t, h*t] W = h (W_a + W_c) + t (W_b - W_c) +
(h * t) W_d``, so the history term and the history projection are computed once per request; only
the ``h * t`` term is per pair. Cost is ``O(T L d H)`` per request: linear in ``L``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from longseq.model.layers import FFNStack
from longseq.model.tower import SequenceTower, UserState


@dataclass
class DINConfig:
    """Hyper-parameters of `DINTower`.

    Attributes:
        d_model: width ``d`` of history/target tokens and of the output.
        att_hidden: hidden widths of the activation-unit MLP (PReLU between layers, as in DIN).
        last_n: keep only the ``last_n`` most recent valid events (0: the whole history), the
            "DIN (Recent N)" baseline.
        normalize: divide the weighted sum by the number of attended events (a per-request
            constant, so the relative weights stay DIN's unnormalised ones); keeps magnitudes
            comparable between 50- and 10k-event histories. False: DIN's raw sum.
        ffn_ratio: SwiGLU hidden width of the output FFN as a multiple of ``d``.
    """

    d_model: int = 64
    att_hidden: list[int] = field(default_factory=lambda: [64, 32])
    last_n: int = 0
    normalize: bool = True
    ffn_ratio: float = 2.0

    def validate(self, prefix: str = "model.din") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if self.d_model < 1:
            raise ValueError(f"{prefix}.d_model must be >= 1, got {self.d_model}")
        if not self.att_hidden or min(self.att_hidden) < 1:
            raise ValueError(f"{prefix}.att_hidden must be non-empty widths >= 1")
        if self.last_n < 0:
            raise ValueError(f"{prefix}.last_n must be >= 0 (0 = all), got {self.last_n}")


def most_recent(hist_mask: torch.Tensor, n: int) -> torch.Tensor:
    """``hist_mask`` restricted to the ``n`` last valid positions of each row (0: unchanged)."""
    if n <= 0:
        return hist_mask
    after = hist_mask.flip(1).cumsum(1).flip(1)  # valid events at or after each position
    return hist_mask & (after <= n)


def cut_recent(
    hist: torch.Tensor, hist_mask: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` most recent valid events of each row, gathered to ``[B, min(n, L), d]``.

    Histories are left-aligned (oldest first, padding at the end), so row ``b``'s last ``n``
    events are slots ``len_b - n .. len_b - 1``. Cutting before the attention keeps the cost of
    "DIN over the last n" at ``O(T n)`` per request instead of ``O(T L)`` then masking.
    """
    b, L, d = hist.shape
    n = min(n, L)
    lengths = hist_mask.sum(1)
    start = (lengths - n).clamp(min=0)  # [B]
    idx = (start[:, None] + torch.arange(n, device=hist.device)[None, :]).clamp(max=L - 1)
    mask = torch.arange(n, device=hist.device)[None, :] < lengths.clamp(max=n)[:, None]
    return hist.gather(1, idx[..., None].expand(b, n, d)), mask


class PReLU(nn.Module):
    """PReLU with one learned slope per feature of the LAST dim (``nn.PReLU`` uses dim 1)."""

    def __init__(self, features: int, init: float = 0.25) -> None:
        super().__init__()
        self.slope = nn.Parameter(torch.full((features,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.slope * x)


@dataclass
class DINState(UserState):
    """`DINTower`'s user state: the kept events' projections and their activation-unit term.

    Attributes:
        h: ``[B, L', d]`` projected history (zero where masked; ``L' = min(last_n, L)`` with
            ``last_n``).
        h_part: ``[B, L', H]`` the history's share of the activation unit's first layer.
        mask: ``[B, L']`` the events attended to.
    """

    h: torch.Tensor
    h_part: torch.Tensor
    mask: torch.Tensor


class DINTower(SequenceTower[DINState]):
    """``z = FFN([Σ_j a(x_j, x_t) P x_j | x_t] W_z)`` with DIN's activation unit ``a``."""

    def __init__(self, cfg: DINConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        d, hidden = cfg.d_model, cfg.att_hidden
        self.proj = nn.Linear(d, d)  # shared by history (once per request) and targets
        self.att_in = nn.Linear(4 * d, hidden[0])  # over [h, t, h-t, h*t], split in forward
        self.att_act = PReLU(hidden[0])
        layers: list[nn.Module] = []
        for a, b in zip(hidden[:-1], hidden[1:]):
            layers += [nn.Linear(a, b), PReLU(b)]
        layers.append(nn.Linear(hidden[-1], 1))
        self.att_mlp = nn.Sequential(*layers)
        self.out_proj = nn.Linear(2 * d, d, bias=False)
        self.out_ffn = FFNStack(d, d, cfg.ffn_ratio, 1, residual=True)

    def encode_user(
        self, hist: torch.Tensor, hist_mask: torch.Tensor, hist_ids: torch.Tensor | None = None
    ) -> DINState:
        """``hist [B,L,d]``, ``hist_mask [B,L]`` bool -> `DINState` (once per request)."""
        d = self.cfg.d_model
        mask = hist_mask
        if self.cfg.last_n > 0:  # cut first: the pair MLP runs on the last_n events only
            hist, mask = cut_recent(hist, hist_mask, self.cfg.last_n)
        h = torch.where(mask.unsqueeze(-1), self.proj(hist), 0.0)  # [B,L,d]
        wa, _, wc, _ = self.att_in.weight.split(d, dim=1)  # each [H, d]
        return DINState(h, h @ (wa + wc).T, mask)  # h_part [B,L,H]

    def score(
        self, state: DINState, tgt: torch.Tensor, tgt_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``tgt [B,T,d]`` against `DINState` -> ``z [B,T,d]``."""
        d = self.cfg.d_model
        h, mask = state.h, state.mask
        t = self.proj(tgt)  # [B,T,d]
        _, wb, wc, wd = self.att_in.weight.split(d, dim=1)  # each [H, d]
        t_part = t @ (wb - wc).T + self.att_in.bias  # [B,T,H]
        tw = t.unsqueeze(2) * wd  # [B,T,H,d]: (h * t) W_d = h (t * W_d), one GEMM per request
        cross = torch.einsum("bld,bthd->btlh", h, tw)  # per (target, event) pair
        pre = cross + state.h_part.unsqueeze(1) + t_part.unsqueeze(2)  # [B,T,L,H]
        w = self.att_mlp(self.att_act(pre)).squeeze(-1)  # [B,T,L], raw DIN weights
        w = torch.where(mask.unsqueeze(1), w, 0.0)
        pooled = torch.einsum("btl,bld->btd", w, h)
        if self.cfg.normalize:
            pooled = pooled / mask.sum(1).clamp(min=1).to(h.dtype)[:, None, None]
        return self.out_ffn(self.out_proj(torch.cat([pooled, tgt], dim=-1)))
