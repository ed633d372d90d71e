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
        # geometric frequencies from 1 to 16 half-turns over [0, max_log]: smooth for any dim
        freqs = torch.pi / max_log * torch.logspace(0, 4, dim // 2, base=2.0)
        self.freqs: torch.Tensor
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        ang = torch.log1p(positions.float()).unsqueeze(-1) * self.freqs
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class Tokenizer(nn.Module):
    """History and target tokens in ONE token space.

    ``x_t = LN(P [item | category])`` and
    ``x_j = LN(P [item | category] + S [action | dt | pos])``: the item/category projection ``P``
    is shared, so a history event and a target of the same item start as nearby tokens and the
    target-to-history match is easy to learn; action, time delta and position are side
    information added to the event's item token.

    ``time_in_tokens=False`` (STCA's ``time_bias``): ``x_j = LN(P [item | category] + S
    [action])``, a function of the event alone; the tower takes time delta and position in its
    attention biases instead.
    """

    def __init__(
        self, emb_dim: int, pos_dim: int, d_model: int, time_in_tokens: bool = True
    ) -> None:
        super().__init__()
        self.time_in_tokens = time_in_tokens
        self.pos = LogPositionEncoding(pos_dim)
        self.item_proj = nn.Linear(2 * emb_dim, d_model, bias=False)
        side = 2 * emb_dim + pos_dim if time_in_tokens else emb_dim
        self.side_proj = nn.Linear(side, d_model, bias=False)
        self.hist_norm = nn.LayerNorm(d_model)
        self.tgt_norm = nn.LayerNorm(d_model)

    def history(self, parts: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        """``parts`` = [item, category, action, dt] ``[E, emb_dim]`` values -> ``[E, d]``."""
        item, category, action, dt = parts
        pos = positions_from_most_recent(lengths) if self.time_in_tokens else None
        return self.events(item, category, action, dt, pos)

    def events(
        self,
        item: torch.Tensor,
        category: torch.Tensor,
        action: torch.Tensor,
        dt: torch.Tensor,
        positions: torch.Tensor | None,
    ) -> torch.Tensor:
        """History tokens from ``[..., emb_dim]`` embeddings and the events' ``positions``
        (distance from the newest, ``[...]``; unused, and may be None, when
        ``time_in_tokens`` is False) -> ``[..., d]``."""
        x = self.item_proj(torch.cat([item, category], -1))
        if not self.time_in_tokens:
            return self.hist_norm(x + self.side_proj(action))
        assert positions is not None, "time_in_tokens needs the events' positions"
        return self.hist_norm(x + self.side_proj(torch.cat([action, dt, self.pos(positions)], -1)))

    def target(self, item: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """``[N, emb_dim]`` item and category embeddings -> ``[N, d]``."""
        return self.tgt_norm(self.item_proj(torch.cat([item, category], -1)))
