"""Target-aware attention signals: id-match and position biases in the logits, a count channel.

A plain softmax over ``L`` history keys starts near uniform; with hundreds of categories nothing
in its gradient says which events share the target's category, and a softmax average reports
the *share* of matching events, not their *number* (docs/results.md, "Diagnosis"). Three small,
optional additions fix that without giving up request-level sharing (keys, values and position
terms stay per request; only the match term is per (target, event) pair, the same order of work
as the attention scores themselves):

* **match bias**: ``s_tj += sum_f beta_{h,f} [id_f(j) == id_f(t)]`` for the id features ``f``
  (item, category) of the event and the target, one learned weight per head and feature.
* **position bias**: ``s_tj += w_h . PE(p_j)``: a per-head linear function of the event's
  log-position encoding (``p_j`` = distance from the newest event), shared by every target of the
  request. It lets a head look at "the far past" or "the last few events" without having to
  learn it through the keys; being a function of ``log(1 + p)`` it is defined at any length.
* **count channel**: ``c_th = log(1 + sum_j sigmoid(s_tj + tau_h))`` per head, projected to
  ``d`` and added to the attention output. With a large match weight and a negative ``tau`` the
  sum is a soft count of matching events in the positions the head favours: the unnormalised
  evidence a softmax average cannot carry. ``log1p`` keeps it on a scale that moves slowly from
  a 256-event training window to a 10k-event served one.

All are off by default in `AttentionBias` and switched on by ``STCAConfig``. Pure torch.
"""

from __future__ import annotations

import torch
from torch import nn

from longseq.model.tokens import LogPositionEncoding


def positions_padded(hist_mask: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` distance of each slot from its row's newest event (0 = newest; padding: 0)."""
    lengths = hist_mask.sum(1, keepdim=True)
    pos = lengths - 1 - torch.arange(hist_mask.shape[1], device=hist_mask.device)[None, :]
    return pos.clamp(min=0)


def match_padded(hist_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
    """``hist_ids [B, L, F]``, ``tgt_ids [B, T, F]`` -> ``[B, T, L, F]`` float 0/1 matches."""
    return (tgt_ids[:, :, None, :] == hist_ids[:, None, :, :]).float()


def match_pairs(
    hist_ids: torch.Tensor, tgt_ids: torch.Tensor, pair_t: torch.Tensor, pair_e: torch.Tensor
) -> torch.Tensor:
    """Jagged: ``hist_ids [E, F]``, ``tgt_ids [N, F]`` -> ``[P, F]`` matches of each pair."""
    return (tgt_ids[pair_t] == hist_ids[pair_e]).float()


class AttentionBias(nn.Module):
    """One layer's match/position logit biases and count channel (see the module doc).

    Args:
        heads: attention heads ``h``.
        d: output width (the count channel's projection).
        num_match: id features compared between target and event (0: no match bias).
        pos_dim: width of the log-position encoding (0: no position bias).
        count: add the count channel.
    """

    def __init__(self, heads: int, d: int, num_match: int, pos_dim: int, count: bool) -> None:
        super().__init__()
        self.num_match, self.pos_dim, self.count = num_match, pos_dim, count
        self.match_w = nn.Parameter(torch.zeros(num_match, heads)) if num_match else None
        if pos_dim:
            self.pos = LogPositionEncoding(pos_dim)
            self.pos_w = nn.Linear(pos_dim, heads, bias=False)
            nn.init.zeros_(self.pos_w.weight)  # starts as plain attention
        if count:
            self.count_tau = nn.Parameter(torch.zeros(heads))
            self.count_proj = nn.Linear(heads, d, bias=False)

    def logit_bias(
        self, match: torch.Tensor | None, positions: torch.Tensor | None, padded: bool
    ) -> torch.Tensor | None:
        """Bias added to the attention scores (``None`` when there is none).

        Padded: ``match [B,T,L,F]``, ``positions [B,L]`` -> ``[B,h,T,L]`` (``[B,h,1,L]`` with
        the position bias alone). Jagged: ``match [P,F]``, ``positions [P]`` (each pair's
        event position) -> ``[P,h]``.
        """
        bias = None
        if self.match_w is not None and match is not None:
            bias = match.to(self.match_w.dtype) @ self.match_w  # [B,T,L,h] or [P,h]
            bias = bias.movedim(-1, 1) if padded else bias
        if self.pos_dim and positions is not None:
            pb = self.pos_w(self.pos(positions).to(self.pos_w.weight.dtype))  # [B,L,h] / [P,h]
            pb = pb.transpose(1, 2)[:, :, None, :] if padded else pb  # shared by the targets
            bias = pb if bias is None else bias + pb
        return bias

    def count_padded(self, scores: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        """``scores [B,h,T,L]`` (biases included) -> ``[B,T,d]`` count channel."""
        w = torch.sigmoid(scores + self.count_tau[None, :, None, None])
        c = torch.log1p((w * hist_mask[:, None, None, :]).sum(-1))  # [B,h,T]
        return self.count_proj(c.transpose(1, 2))

    def count_jagged(self, scores: torch.Tensor, pair_t: torch.Tensor, n: int) -> torch.Tensor:
        """``scores [P,h]`` -> ``[N,d]`` count channel of each target."""
        w = torch.sigmoid(scores + self.count_tau)
        c = scores.new_zeros(n, scores.shape[1]).index_add(0, pair_t, w)
        return self.count_proj(torch.log1p(c))
