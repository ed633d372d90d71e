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
* **count channel** (needs the match bias's id features): per head ``h`` and id feature ``f``,
  ``c_thf = log(1 + sum_j [id_f(j) == id_f(t)] g_h(p_j))`` with a learned position window
  ``g_h(p) = sigmoid(u_h . PE(p) + tau_h)`` (per request, shared by its targets), projected to
  ``d`` and added to the attention output: how *many* events of the target's item or category
  the history holds in the part the head looks at, the unnormalised evidence a softmax average
  cannot carry. At initialisation ``g = 1/2`` everywhere, so the channel starts as the plain
  match count; ``log1p`` keeps it on a scale that moves slowly from a 256-event training window
  to a 10k-event served one.

The learned scalars are multiplied by a constant ``GAIN`` so that they move at ``GAIN`` times
the dense learning rate (Adam's steps are scale-free): logit biases of a few units are reached
in a few hundred steps, not thousands.

All are off by default in `AttentionBias` and switched on by ``STCAConfig``. Pure torch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from longseq.model.tokens import LogPositionEncoding

#: scale of the learned biases (see the module doc)
GAIN = 8.0

#: time-delta buckets run 0..63 (`longseq.data.collate.dt_buckets`; not imported: this module
#: stays free of torchrec, which the data package needs)
DT_BUCKETS = 64


def count_tables(
    window: torch.Tensor, groups: list[tuple[torch.Tensor, torch.Tensor, int]]
) -> torch.Tensor:
    """The count channel's ``c [N, h * F]`` from per-request id tables (the ``flex`` kernel's).

    ``window [E, h]`` is ``g_h(p)`` of every event; per id feature, the events' windows are summed
    per (request, id value) group (`longseq.model.ops.history.PackedBatch.count_groups`) and each
    target reads its own group's entry: the same sum as ``sum_j [id(j) == id(t)] g_h(p_j)`` over
    the request's events, in O(E + N).
    """
    per_f = []
    for event_group, target_group, num in groups:
        table = window.new_zeros(num, window.shape[1]).index_add(0, event_group, window)
        per_f.append(table[target_group])  # [N, h]
    return torch.stack(per_f, -1).flatten(1)  # [N, h, F] -> h-major, as count_pairs


class AttentionBias(nn.Module):
    """One layer's match/position logit biases and count channel (see the module doc).

    Args:
        heads: attention heads ``h``.
        d: output width (the count channel's projection).
        num_match: id features compared between target and event (0: no match bias).
        pos_dim: width of the log-position encoding (position bias and count window).
        position_bias: add the position bias to the logits.
        count: add the count channel (needs ``num_match > 0``).
        time: the events' "positions" are ``[..., 2]`` pairs (position, time-delta bucket) and
            both are encoded (``STCAConfig.time_bias``): the position bias and the count window
            are functions of the event's age as well as its rank.
    """

    def __init__(
        self,
        heads: int,
        d: int,
        num_match: int,
        pos_dim: int,
        position_bias: bool,
        count: bool,
        time: bool = False,
    ) -> None:
        super().__init__()
        self.time = time
        enc = 2 * pos_dim if time else pos_dim
        if count and not num_match:
            raise ValueError("the count channel counts id matches: it needs the match bias")
        self.num_match, self.position_bias, self.count = num_match, position_bias, count
        self.match_w = nn.Parameter(torch.zeros(num_match, heads)) if num_match else None
        if position_bias or count:
            self.pos = LogPositionEncoding(pos_dim)
        if time:  # buckets are logarithmic already: the frequencies span the bucket range
            self.dt = LogPositionEncoding(pos_dim, max_log=math.log1p(DT_BUCKETS))
        if position_bias:
            self.pos_w = nn.Linear(enc, heads, bias=False)
            nn.init.zeros_(self.pos_w.weight)  # starts as plain attention
        if count:
            self.count_pos_w = nn.Linear(enc, heads, bias=False)
            nn.init.zeros_(self.count_pos_w.weight)  # g = 1/2: the plain match count
            self.count_tau = nn.Parameter(torch.zeros(heads))
            self.count_proj = nn.Linear(heads * num_match, d, bias=False)

    def _pe(self, positions: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.time:  # [..., 2]: (position, time-delta bucket)
            pe = torch.cat([self.pos(positions[..., 0]), self.dt(positions[..., 1])], -1)
            return pe.to(like.dtype)
        return self.pos(positions).to(like.dtype)

    def logit_bias(
        self, match: torch.Tensor | None, positions: torch.Tensor | None, padded: bool
    ) -> torch.Tensor | None:
        """Bias added to the attention scores (``None`` when there is none).

        Padded: ``match [B,T,L,F]``, ``positions [B,L]`` -> ``[B,h,T,L]`` (``[B,h,1,L]`` with
        the position bias alone). Packed (``pairs``): ``match [P,F]``, ``positions [P]`` (each pair's
        event position) -> ``[P,h]``.
        """
        bias = None
        if self.match_w is not None and match is not None:
            w = GAIN * self.match_w
            bias = match.to(w.dtype) @ w  # [B,T,L,h] or [P,h]
            bias = bias.movedim(-1, 1) if padded else bias
        if self.position_bias and positions is not None:
            pb = GAIN * self.pos_w(self._pe(positions, self.pos_w.weight))  # [B,L,h] / [P,h]
            pb = pb.transpose(1, 2)[:, :, None, :] if padded else pb  # shared by the targets
            bias = pb if bias is None else bias + pb
        return bias

    def encode(self, positions: torch.Tensor) -> torch.Tensor:
        """The positions' encoding ``[..., pos_dim]`` (``2 pos_dim`` with ``time``) the position
        bias and the count window read: a fixed function, the same in every layer of a tower, so
        a caller may compute it once for all of them (``pe=`` of `window` / `score_terms`)."""
        return self._pe(positions, self.count_tau if self.count else self.pos_w.weight)

    def window(self, positions: torch.Tensor, pe: torch.Tensor | None = None) -> torch.Tensor:
        """The count channel's position window ``g_h(p)``: ``[..., h]`` for ``positions [...]``
        (``pe``: their `encode`, if already computed)."""
        pe = self._pe(positions, self.count_tau) if pe is None else pe
        return torch.sigmoid(GAIN * (self.count_pos_w(pe) + self.count_tau))

    def count_padded(
        self, match: torch.Tensor, positions: torch.Tensor, hist_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``match [B,T,L,F]``, ``positions`` / ``hist_mask [B,L]`` (None: no padding) ->
        ``[B,T,d]``."""
        g = self.window(positions)  # [B,L,h]
        if hist_mask is not None:
            g = g * hist_mask[..., None].to(self.count_tau.dtype)
        c = torch.einsum("btlf,blh->bthf", match.to(g.dtype), g)
        return self.count_proj(torch.log1p(c).flatten(2))

    def count_pairs(
        self, match: torch.Tensor, positions: torch.Tensor, pair_t: torch.Tensor, n: int
    ) -> torch.Tensor:
        """Packed, per pair: ``match [P,F]``, ``positions [P]`` (each pair's event) -> ``[N,d]``."""
        g = self.window(positions)  # [P,h]
        per_pair = (g[:, :, None] * match.to(g.dtype)[:, None, :]).flatten(1)  # [P, h*F]
        c = per_pair.new_zeros(n, per_pair.shape[1]).index_add(0, pair_t, per_pair)
        return self.count_proj(torch.log1p(c))

    def count_grouped(
        self,
        positions: torch.Tensor,
        groups: list[tuple[torch.Tensor, torch.Tensor, int]],
        pe: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """From per-request id tables (`count_tables`; the ``flex`` kernel's, and a one-request
        state's match tables): ``positions [E]`` -> ``[N,d]`` (``pe``: their `encode`, if
        already computed)."""
        return self.count_proj(torch.log1p(count_tables(self.window(positions, pe), groups)))

    def score_terms(
        self, positions: torch.Tensor | None, with_ids: bool, pe: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The logit biases as the ``flex`` kernel's ``score_mod`` adds them: the position bias
        of every event ``[E, h]`` (None without it or without ``positions``) and the match
        weights ``[F, h]`` (None without the match bias or, ``with_ids`` False, the ids).
        ``pe``: the positions' `encode`, if already computed."""
        position = match_w = None
        if self.position_bias and positions is not None:
            pe = self._pe(positions, self.pos_w.weight) if pe is None else pe
            position = GAIN * self.pos_w(pe)  # [E, h]
        if self.match_w is not None and with_ids:
            match_w = GAIN * self.match_w  # [F, h]
        return position, match_w
