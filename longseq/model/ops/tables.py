"""Per-user match tables: one request's events indexed by id value, so that a candidate finds the
events that share its item or category by a lookup instead of a comparison with all ``L``.

`MatchTables` is built once per user state (a stable sort of the events' ids per match feature)
and kept exact under the incremental updates of a cached state: `MatchTables.append` merges new
events in (O(L + n log n), no re-sort) and `MatchTables.drop_oldest` removes the oldest (O(L)).
`TableHistory` is what one request's candidates are scored against
(`longseq.model.ops.matched.table_attention`): the tables, the candidates' id ranges in them and
the per-request inputs of the count channel. Its count channel is read from per-id tables of
the windowed counts (``sum_j [id(j) == v] g_h(p_j)`` for every id value ``v`` of the history),
built once per layer in O(L) and looked up per candidate: the same sums as
`longseq.model.match.AttentionBias.count_padded`. Pure torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from longseq.model.match import AttentionBias

#: the share of (candidate, event) pairs that match (summed over the features) above which
#: `TableHistory.sparse` is False: the corrections would cost more than building the bias densely
#: (the ``serve`` benchmark's ``+tables`` rows: at 4 % per feature the dense bias is faster)
MAX_MATCHED_SHARE = 0.04


@dataclass
class MatchTables:
    """One user's events sorted by id, per match feature (``F`` features, ``L`` events).

    Attributes:
        order: ``[F, L]`` int64: event indices (0 = oldest) sorted by the feature's id, ties
            oldest first (a stable sort).
        sorted_ids: ``[F, L]``: the ids in that order.
    """

    order: torch.Tensor
    sorted_ids: torch.Tensor

    @classmethod
    def build(cls, hist_ids: torch.Tensor) -> MatchTables:
        """The tables of ``hist_ids [L, F]`` (the events' match ids, oldest -> newest)."""
        if hist_ids.ndim != 2:
            raise ValueError(f"hist_ids must be [L, F], got {list(hist_ids.shape)}")
        ids = hist_ids.T.contiguous()  # [F, L]
        sorted_ids, order = torch.sort(ids, dim=1, stable=True)
        return cls(order, sorted_ids)

    def __len__(self) -> int:
        return int(self.order.shape[1])

    def append(self, new_ids: torch.Tensor) -> MatchTables:
        """The tables of these events followed by ``new_ids [n, F]`` (newer): equal to
        ``build`` of all ``L + n`` events, by a merge (O(L + n log n)), not a sort of all."""
        n, length = int(new_ids.shape[0]), len(self)
        if n == 0:
            return self
        f = self.order.shape[0]
        new_sorted, new_order = torch.sort(new_ids.T.contiguous(), dim=1, stable=True)
        new_order = new_order + length  # their event indices come after every old one
        # ties go after the old events (older: smaller index), as a stable sort of all puts them
        ins = torch.searchsorted(self.sorted_ids, new_sorted, right=True)  # [F, n]
        new_at = ins + torch.arange(n, device=ins.device)  # where each new one lands
        old_idx = torch.arange(length, device=ins.device).expand(f, length).contiguous()
        old_at = old_idx + torch.searchsorted(ins, old_idx, right=True)
        order = self.order.new_empty(f, length + n)
        sorted_ids = self.sorted_ids.new_empty(f, length + n)
        order.scatter_(1, old_at, self.order).scatter_(1, new_at, new_order)
        sorted_ids.scatter_(1, old_at, self.sorted_ids).scatter_(1, new_at, new_sorted)
        return MatchTables(order, sorted_ids)

    def drop_oldest(self, n: int) -> MatchTables:
        """The tables without the ``n`` oldest events (a bounded window's eviction), O(L)."""
        if n <= 0:
            return self
        f, length = self.order.shape
        keep = self.order >= n  # the same number per feature: every feature lists every event
        rest = length - min(n, length)
        return MatchTables(
            (self.order[keep] - n).view(f, rest), self.sorted_ids[keep].view(f, rest)
        )

    def lookup(self, tgt_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``tgt_ids [T, F]`` -> ``(lo, hi)`` ``[F, T]``: per feature, candidate ``t``'s
        matching events are ``order[f, lo[f, t]:hi[f, t]]`` (none: ``lo == hi``)."""
        want = tgt_ids.T.contiguous().to(self.sorted_ids.dtype)
        lo = torch.searchsorted(self.sorted_ids, want)
        hi = torch.searchsorted(self.sorted_ids, want, right=True)
        return lo, hi


@dataclass
class TableHistory:
    """One request's candidates against a state with `MatchTables` (built once per scoring call,
    shared by every layer).

    Attributes:
        tables: the user's `MatchTables` (``L`` events).
        hist_ids: ``[L, F]`` the events' match ids.
        tgt_ids: ``[T, F]`` the candidates' match ids.
        positions: ``[L]`` (or ``[L, 2]`` with ``time_bias``) the events' position inputs, or
            None.
        lo, hi: ``[F, T]`` `MatchTables.lookup` of the candidates.
        groups: the count channel's id groups, per feature ``(event_group [L], candidate_group
            [T], U + 1)``: each event's id value as an index ``0..U-1`` and each candidate's
            (``U`` when the history has none of it), the form of
            `longseq.model.match.count_tables`; built by the first layer that needs them.
        pe: the positions' encoding, computed by the first layer that needs it (every layer's
            is the same function, `AttentionBias.encode`).
    """

    tables: MatchTables
    hist_ids: torch.Tensor
    tgt_ids: torch.Tensor
    positions: torch.Tensor | None
    lo: torch.Tensor
    hi: torch.Tensor
    groups: list[tuple[torch.Tensor, torch.Tensor, int]] | None = None
    pe: torch.Tensor | None = None

    @classmethod
    def build(
        cls,
        tables: MatchTables,
        hist_ids: torch.Tensor,
        tgt_ids: torch.Tensor,
        positions: torch.Tensor | None,
    ) -> TableHistory:
        """The history of candidates ``tgt_ids [T, F]`` over the events ``hist_ids [L, F]``
        indexed by ``tables``."""
        if len(tables) != hist_ids.shape[0]:
            raise ValueError(
                f"the tables index {len(tables)} events, the state {hist_ids.shape[0]}"
            )
        lo, hi = tables.lookup(tgt_ids)
        return cls(tables, hist_ids, tgt_ids, positions, lo, hi)

    @property
    def sparse(self) -> bool:
        """Whether few enough (candidate, event) pairs match for the tables to pay
        (`MAX_MATCHED_SHARE`); else the padded kernels' dense bias is the cheaper form."""
        total = self.tgt_ids.shape[0] * self.hist_ids.shape[0]
        return int((self.hi - self.lo).sum()) <= MAX_MATCHED_SHARE * total

    def _encoded(self, bias: AttentionBias) -> torch.Tensor | None:
        """The positions' encoding, computed once for every layer (`AttentionBias.encode`)."""
        if self.positions is None or not (bias.position_bias or bias.count):
            return None
        if self.pe is None:
            self.pe = bias.encode(self.positions)
        return self.pe

    def logit_bias(self, bias: AttentionBias):  # noqa: ANN201 - the score terms
        """The layer's position bias ``[L, h]`` (or None) and match weights ``[F, h]``
        (`AttentionBias.score_terms`): the kernel adds them itself."""
        return bias.score_terms(self.positions, True, self._encoded(bias))

    def _groups(self) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """`groups`, built once (O(L) per feature: the runs of equal ids in the sorted order)."""
        if self.groups is None:
            self.groups = []
            length = len(self.tables)
            for f in range(self.tables.order.shape[0]):
                lo, hi = self.lo[f], self.hi[f]
                seg = torch.unique_consecutive(self.tables.sorted_ids[f], return_inverse=True)[1]
                u = int(seg[-1]) + 1 if length else 0
                event = torch.empty_like(seg).scatter_(0, self.tables.order[f], seg)
                if length:  # a candidate's id value: the group of its first matching event
                    cand = torch.where(hi > lo, seg[lo.clamp(max=length - 1)], u)
                else:
                    cand = torch.full_like(lo, u)
                self.groups.append((event, cand, u + 1))  # group u: no event, a zero count
        return self.groups

    def count(self, bias: AttentionBias) -> torch.Tensor:
        """The layer's count channel ``[1, T, d]`` from per-id tables of the windowed counts
        (`AttentionBias.count_grouped`'s tables, with the positions encoded once)."""
        assert self.positions is not None  # a count channel needs the positions
        return bias.count_grouped(self.positions, self._groups(), self._encoded(bias))[None]
