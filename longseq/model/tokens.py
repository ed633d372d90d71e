"""Event and target tokens: looked-up embeddings -> ``x_j`` / ``x_t`` of width ``d`` (pure torch).

Fusion (paper §6.1 leaves it open; ours): concatenate the item, category, action-type and
time-delta-bucket embeddings with a position encoding, then one linear layer to ``d``.

Position scheme: position counted from the most recent event (0 = newest), encoded as sinusoids of
``log(1 + p)``. It is defined for every ``p`` (no table to index past), smooth in ``p``, and
changes slowly at large ``p``, so serving 10k events after training on 2k windows neither fails
nor falls off a learned range: the encodings of unseen far positions sit close to the encodings of
the farthest trained ones.
"""

from __future__ import annotations

import torch
from torch import nn


def positions_from_most_recent(lengths: torch.Tensor) -> torch.Tensor:
    """For jagged rows of ``lengths`` (oldest -> newest) the distance of each event from the newest."""
    total = lengths.sum()
    offsets = torch.cumsum(lengths, 0) - lengths
    idx = torch.arange(int(total), device=lengths.device)
    row = torch.repeat_interleave(torch.arange(lengths.numel(), device=lengths.device), lengths)
    return lengths[row] - 1 - (idx - offsets[row])


class LogPositionEncoding(nn.Module):
    """Sinusoids of ``log1p(p)`` at ``dim // 2`` geometric frequencies (``dim`` even)."""

    def __init__(self, dim: int, max_log: float = 12.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"position dim must be even, got {dim}")
        freqs = torch.pi / max_log * torch.pow(2.0, torch.arange(dim // 2, dtype=torch.float32))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        ang = torch.log1p(positions.float()).unsqueeze(-1) * self.freqs
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class HistoryTokenizer(nn.Module):
    """``[item | category | action | dt | pos]`` -> Linear -> ``x_j`` in ``R^d``."""

    def __init__(self, emb_dim: int, pos_dim: int, d_model: int) -> None:
        super().__init__()
        self.pos = LogPositionEncoding(pos_dim)
        self.proj = nn.Linear(4 * emb_dim + pos_dim, d_model)

    def forward(self, parts: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """``parts``: four ``[E, emb_dim]`` jagged value tensors; returns ``[E, d]``."""
        pos = self.pos(positions_from_most_recent(lengths))
        return self.proj(torch.cat(parts + [pos], dim=-1))


class TargetTokenizer(nn.Module):
    """``[item | category]`` -> Linear -> ``x_t`` in ``R^d`` (same item/category tables)."""

    def __init__(self, emb_dim: int, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * emb_dim, d_model)

    def forward(self, item: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([item, category], dim=-1))
