"""Pass 2 primitives: group one bucket's sorted events into requests and build their rows.

Rules (``docs/datasets.md``):

- a user's *target events* (``kind`` of the request type) are grouped in time order: a new
  request starts at the user's first event, when the gap to the previous target event exceeds
  ``gap_s`` (``group=gap``) or the clock window ``floor((ts - window_origin) / window_s)``
  changes (``group=window``), and after every ``max_targets`` events;
- ``request_ts`` is the time (seconds) of the request's first event;
- the history is every *history event* of the user with ``ts < request_ts`` (strictly; so no
  event at or after the request, including the request's own), oldest to newest, capped to the
  ``max_hist_len`` most recent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from longseq.datasets.convert.options import DatasetOptions

_TS_BITS = 34  # seconds since the bucket's first event: 544 years


@dataclass
class Events:
    """One bucket's events, dense ids, sorted by (user, ts, sub, seq)."""

    user: np.ndarray
    item: np.ndarray
    cat: np.ndarray
    ts: np.ndarray
    kind: np.ndarray
    action: np.ndarray
    seq: np.ndarray
    labels: dict[str, np.ndarray]

    @classmethod
    def from_table(cls, t: pa.Table, item_vocab: np.ndarray, cat_vocab: np.ndarray) -> Events:
        """Sort a bucket table and map raw item/category ids to dense ids (vocab positions)."""
        col = {n: t.column(n).to_numpy() for n in t.column_names}
        order = np.lexsort((col["seq"], col["sub"], col["ts"], col["user"]))
        lab = {n[4:]: col[n][order] for n in t.column_names if n.startswith("lab_")}
        return cls(
            user=col["user"][order],
            item=np.searchsorted(item_vocab, col["item"][order]),
            cat=np.searchsorted(cat_vocab, col["cat"][order]),
            ts=col["ts"][order], kind=col["kind"][order], action=col["action"][order],
            seq=col["seq"][order], labels=lab,
        )  # fmt: skip

    def subset(self, mask: np.ndarray) -> Events:
        """The events where ``mask`` holds (order kept)."""
        return Events(
            self.user[mask], self.item[mask], self.cat[mask], self.ts[mask], self.kind[mask],
            self.action[mask], self.seq[mask], {k: v[mask] for k, v in self.labels.items()},
        )  # fmt: skip

    def __len__(self) -> int:
        return int(self.user.size)


@dataclass
class Requests:
    """Requests of one bucket over a sorted target-event array ``ev``."""

    ev: Events  #: the target events
    start: np.ndarray  #: first target event of each request (index into ``ev``)
    count: np.ndarray  #: target events per request
    kind: int

    @property
    def user(self) -> np.ndarray:
        return self.ev.user[self.start]

    @property
    def ts(self) -> np.ndarray:
        return self.ev.ts[self.start]

    @property
    def key(self) -> np.ndarray:
        """The global row number of each request's first event: a unique, bucketing-independent
        key (seeds sampling)."""
        return self.ev.seq[self.start]

    def __len__(self) -> int:
        return int(self.start.size)

    def event_request(self) -> np.ndarray:
        """Request index of every target event."""
        return np.repeat(np.arange(len(self)), self.count)


def group(ev: Events, opts: DatasetOptions, kind: int) -> Requests:
    """Group sorted target events into requests (rules in the module docstring)."""
    n = len(ev)
    if n == 0:
        z = np.zeros(0, np.int64)
        return Requests(ev, z, z, kind)
    new = np.ones(n, bool)
    same_user = ev.user[1:] == ev.user[:-1]
    if opts.group == "gap":
        cont = np.diff(ev.ts) <= opts.gap_s
    else:
        w = (ev.ts - opts.window_origin) // opts.window_s
        cont = w[1:] == w[:-1]
    new[1:] = ~(same_user & cont)
    gid = np.cumsum(new) - 1
    gstart = np.flatnonzero(new)
    pos = np.arange(n) - gstart[gid]
    new |= pos % opts.max_targets == 0
    start = np.flatnonzero(new)
    count = np.diff(np.append(start, n))
    return Requests(ev, start, count, kind)


def _keys(user_rank: np.ndarray, ts: np.ndarray, t0: int) -> np.ndarray:
    return (user_rank << _TS_BITS) + (ts - t0)


def history_bounds(
    hist: Events, req_user: np.ndarray, req_ts: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[start, end)`` into ``hist`` of each request's history: the user's events with
    ``ts < request_ts``, the ``max_len`` most recent (0: all)."""
    if len(hist) == 0:
        z = np.zeros(req_user.size, np.int64)
        return z, z
    users = np.unique(np.concatenate([hist.user, req_user]))
    t0 = int(min(hist.ts.min(), req_ts.min())) if req_ts.size else int(hist.ts.min())
    hkey = _keys(np.searchsorted(users, hist.user), hist.ts, t0)
    urank = np.searchsorted(users, req_user)
    end = np.searchsorted(hkey, _keys(urank, req_ts, t0), side="left")
    ustart = np.searchsorted(hkey, urank << _TS_BITS, side="left")
    start = np.maximum(ustart, end - max_len) if max_len > 0 else ustart
    return start.astype(np.int64), end.astype(np.int64)


def ranges(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices of the concatenated ranges ``[start, end)``, list offsets)."""
    lens = end - start
    off = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    idx = np.repeat(start - off[:-1], lens) + np.arange(off[-1], dtype=np.int64)
    return idx, off


@dataclass
class TargetSet:
    """Flat targets of a bucket's requests, grouped by request (``req`` non-decreasing)."""

    req: np.ndarray
    item: np.ndarray
    cat: np.ndarray
    labels: dict[str, np.ndarray]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_events(cls, reqs: Requests) -> TargetSet:
        """Every target event is one target, with its labels (KuaiRand, MovieLens)."""
        ev = reqs.ev
        return cls(reqs.event_request(), ev.item, ev.cat, dict(ev.labels))


def _list(off: np.ndarray, values: np.ndarray, typ: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(off, pa.int32()), pa.array(values, typ))


def request_table(
    schema: pa.Schema,
    request_id: np.ndarray,
    user: np.ndarray,
    request_ts: np.ndarray,
    hist: Events,
    h_start: np.ndarray,
    h_end: np.ndarray,
    tg: TargetSet,
    t_start: np.ndarray,
    t_end: np.ndarray,
    extra: dict[str, pa.Array] | None = None,
) -> pa.Table:
    """Rows of the request-level format for the given requests (``schema`` column order);
    ``extra``: further columns by name (the side features)."""
    hidx, hoff = ranges(h_start, h_end)
    tidx, toff = ranges(t_start, t_end)
    i64, i8 = pa.int64(), pa.int8()
    cols: dict[str, pa.Array] = {
        "request_id": pa.array(request_id, i64),
        "user_id": pa.array(user, i64),
        "request_ts": pa.array(request_ts, i64),
        "hist_item_id": _list(hoff, hist.item[hidx], i64),
        "hist_category_id": _list(hoff, hist.cat[hidx], i64),
        "hist_action": _list(hoff, hist.action[hidx], i64),
        "hist_ts": _list(hoff, hist.ts[hidx], i64),
        "tgt_item_id": _list(toff, tg.item[tidx], i64),
        "tgt_category_id": _list(toff, tg.cat[tidx], i64),
    }
    for name, v in {**tg.labels, **tg.extra}.items():
        cols[f"tgt_{name}"] = _list(toff, v[tidx], i8)
    cols |= extra or {}
    return pa.Table.from_arrays([cols[n] for n in schema.names], schema=schema)
