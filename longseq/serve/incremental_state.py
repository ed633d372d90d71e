"""`IncrementalUser`: one user's incremental state (`longseq.serve.incremental`), and its
plain-dict form (`user_to_dict` / `user_from_dict`: tensors, ints, None, tuples and lists, no
pickled class), what `longseq.serve.spill.FileTier` writes to a file and memory-maps back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from longseq.model.ops.tables import MatchTables
from longseq.model.stca_events import STCAEvents, events_nbytes, storage_nbytes


@dataclass
class IncrementalUser:
    """One user's cached history state (`longseq.model.stca_events.STCAEvents`) and the raw
    event columns the per-request part is rebuilt from.

    Attributes:
        events: the tower's per-event state of the (windowed) history.
        item, category, action, ts: ``[L]`` int64, the events' ids and timestamps (oldest ->
            newest); ``ts`` gives each request's time-delta buckets.
        token_sum: ``[d]`` float64 sum of the history tokens (the RankMixer head's history
            token is their mean), or None when the head does not read it.
        seen: how many events this user's state has taken in since it was first encoded
            (the first request's whole history and every event appended since, evicted ones
            included).
    """

    events: STCAEvents
    item: torch.Tensor
    category: torch.Tensor
    action: torch.Tensor
    ts: torch.Tensor
    token_sum: torch.Tensor | None
    seen: int

    def __len__(self) -> int:
        return int(self.ts.numel())

    def nbytes(self) -> int:
        """Bytes of its tensors: what a cache of such states pays per user."""
        raw = sum(storage_nbytes(t) for t in (self.item, self.category, self.action, self.ts))
        extra = 0 if self.token_sum is None else storage_nbytes(self.token_sum)
        return events_nbytes(self.events) + raw + extra


#: the version of `user_to_dict`'s layout
FORMAT = 1
_COLUMNS = ("item", "category", "action", "ts", "token_sum")


def user_to_dict(user: IncrementalUser) -> dict[str, Any]:
    """``user`` as a plain dict (tensors, ints, None, tuples, lists): what
    ``torch.load(weights_only=True)`` reads back, and `user_from_dict` turns into the state."""
    ev = user.events
    layers = [tuple(x) if isinstance(x, tuple) else x for x in ev.layers]  # no named tuples
    out = {"format": FORMAT, "layers": layers, "hist_ids": ev.hist_ids, "hist_rel": ev.hist_rel}
    out["tables"] = None if ev.tables is None else (ev.tables.order, ev.tables.sorted_ids)
    return out | {c: getattr(user, c) for c in _COLUMNS} | {"seen": int(user.seen)}


def user_from_dict(d: dict[str, Any]) -> IncrementalUser:
    """The `IncrementalUser` of a `user_to_dict` dict (a ``ValueError`` for another format)."""
    if d.get("format") != FORMAT:
        raise ValueError(f"not a user state of format {FORMAT}: format {d.get('format')!r}")
    tables = d.get("tables")  # absent in files written before the tables were kept
    tables = None if tables is None else MatchTables(*tables)
    events = STCAEvents(list(d["layers"]), d["hist_ids"], d["hist_rel"], tables)
    item, category, action, ts, token_sum = (d[c] for c in _COLUMNS)
    return IncrementalUser(events, item, category, action, ts, token_sum, int(d["seen"]))
