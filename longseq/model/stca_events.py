"""STCA's user state split into a per-event part that survives new events and a per-request
part that is cheap to rebuild (pure torch).

With ``STCAConfig.time_bias`` the history tokens are functions of each event alone (item,
category, action): its time delta and position enter only through the attention's logit biases
and count window. So every per-event tensor of `STCAState` (each layer's keys and values, the
match ids, the soft match's vectors) is the same whatever the request time and however many
events came after it. `STCAEvents` holds exactly those tensors, for one user, packed
(``[L, ...]``, oldest -> newest):

* `encode_events` computes them for any run of events: O(n) per layer for ``n`` events;
* `append_events` / `drop_oldest` extend a user's events with new ones and evict the oldest of a
  bounded window: both are concatenations and slices, no recomputation;
* `request_state` turns them into the `STCAState` of one request at a given time: the events'
  positions (from the newest) and time-delta buckets are the only per-request inputs, O(L)
  integers.

``request_state(append_events(encode_events(a), encode_events(b)), dt)`` equals
``encode_user_packed(a + b)`` exactly up to float rounding (tests/serve/test_incremental.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from longseq.model.ops.dispatch import Projected
from longseq.model.ops.kernels import Kernel
from longseq.model.ops.tables import MatchTables
from longseq.model.stca import STCAState, STCATower
from longseq.model.tokens import positions_from_most_recent


@dataclass
class STCAEvents:
    """The per-event part of one user's `STCAState` (module doc); ``L`` events.

    Attributes:
        layers: per layer, the packed keys and values ``([L, h, d_h], [L, h, d_h])``.
        hist_ids: ``[L, F]`` the events' match ids (None without the match bias).
        hist_rel: ``[L, r]`` the soft match's vectors (None without it).
        tables: the events indexed by id (`MatchTables` of ``hist_ids``), kept exact by
            `append_events` / `drop_oldest`, or None (not kept).
    """

    layers: list[Projected]
    hist_ids: torch.Tensor | None = None
    hist_rel: torch.Tensor | None = None
    tables: MatchTables | None = None

    def __len__(self) -> int:
        first = self.layers[0]
        return int((first[0] if isinstance(first, tuple) else first).shape[0])


def check_incremental(tower: STCATower) -> None:
    """A ``ValueError`` unless ``tower``'s per-event state is independent of the request time."""
    if not isinstance(tower, STCATower):
        raise ValueError(
            f"an incremental user state needs the STCA tower (model.tower=stca), not "
            f"{type(tower).__name__}"
        )
    if not tower.cfg.time_bias:
        raise ValueError(
            "an incremental user state needs model.stca.time_bias=true: without it every "
            "event's time delta and position are part of its token, and one new event or one "
            "second later changes every key and value (docs/serving.md)"
        )


def encode_events(
    tower: STCATower, hist: torch.Tensor, hist_ids: torch.Tensor | None = None
) -> STCAEvents:
    """History tokens ``hist [n, d]`` of ``n`` events of one user and ``hist_ids [n, F + 1]``
    as the tower's `history_ids` gives them (required: a ``ValueError`` without them; the
    trailing time-delta column is ignored, any values do) -> their `STCAEvents`."""
    check_incremental(tower)
    match, _dt = tower._split(hist_ids)  # an error without them: time_bias reads dt_bucket
    encoded = tower.encode_history(hist)
    layers = [attn.project(x, tower.default_packed) for attn, x in zip(tower._attns(), encoded)]
    match = None if match is None else match.contiguous()  # not a view of the dt column's
    return STCAEvents(layers, match, tower._rel(hist))


def _cat(a, b):  # noqa: ANN001, ANN202 - tensors, tuples of them, or None
    if a is None:
        return b
    if isinstance(a, tuple):
        return tuple(torch.cat([x, y]) for x, y in zip(a, b, strict=True))
    return torch.cat([a, b])


def _tail(x, start: int):  # noqa: ANN001, ANN202
    if x is None:
        return None
    if isinstance(x, tuple):
        return tuple(t[start:] for t in x)
    return x[start:]


def append_events(old: STCAEvents, new: STCAEvents) -> STCAEvents:
    """``old``'s events followed by ``new``'s (both of one user, oldest -> newest); ``old``'s
    tables, if it keeps some, take in ``new``'s ids (a merge, no re-sort)."""
    tables = old.tables
    if tables is not None:
        assert new.hist_ids is not None  # tables index the match ids: the same tower's events
        tables = tables.append(new.hist_ids)
    return STCAEvents(
        [_cat(a, b) for a, b in zip(old.layers, new.layers, strict=True)],
        _cat(old.hist_ids, new.hist_ids),
        _cat(old.hist_rel, new.hist_rel),
        tables,
    )


def drop_oldest(events: STCAEvents, n: int) -> STCAEvents:
    """``events`` without its ``n`` oldest events (a bounded window's eviction; views of
    ``events``' tensors)."""
    if n <= 0:
        return events
    return STCAEvents(
        [_tail(x, n) for x in events.layers],
        _tail(events.hist_ids, n),
        _tail(events.hist_rel, n),
        None if events.tables is None else events.tables.drop_oldest(n),
    )


def request_state(tower: STCATower, events: STCAEvents, dt_bucket: torch.Tensor) -> STCAState:
    """The packed `STCAState` of one request over ``events`` (``L`` of them), whose time-delta
    buckets at the request time are ``dt_bucket [L]``: what `STCATower.encode_user_packed`
    returns for the same events and request."""
    check_incremental(tower)
    n = len(events)
    if dt_bucket.shape != (n,):
        raise ValueError(f"dt_bucket must be [{n}] (one per event), got {list(dt_bucket.shape)}")
    lengths = torch.tensor([n], device=dt_bucket.device)
    pos = positions_from_most_recent(lengths)
    return STCAState(
        layers=list(events.layers),
        hist_lengths=lengths,
        positions=torch.stack([pos, dt_bucket.to(pos.dtype)], -1),
        hist_ids=events.hist_ids,
        hist_rel=events.hist_rel,
    )


def padded_state(tower: STCATower, state: STCAState) -> STCAState | None:
    """The one-request padded form (``[1, L, ...]``, no padding) of the packed ``state`` that
    `request_state` returns, for a padded tower whose kernel reads keys and values (``kv``,
    ``sdpa``, ``reference``): what its ``encode_user`` returns for the same request, so that the
    candidates are scored by the tower's own kernel rather than the packed ``pairs`` one (which
    gathers the keys and values per (candidate, event) pair: about 200x slower per candidate at
    L = 10k on CPU). None for a packed tower and for ``absorbed`` (its state is ``X̃``)."""
    attns = tower._attns()
    if tower.layout != "padded" or any(a.kernel is Kernel.ABSORBED for a in attns):
        return None
    layers: list[Projected] = []
    for attn, kv in zip(attns, state.layers, strict=True):
        assert isinstance(kv, tuple)  # the packed kernels' (K, V)
        k, v = kv[0][None], kv[1][None]
        layers.append(
            (k.transpose(1, 2), v.transpose(1, 2)) if attn.kernel is Kernel.SDPA else (k, v)
        )

    def one(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[None]

    assert state.positions is not None  # request_state sets them
    mask = torch.ones(1, state.positions.shape[0], dtype=torch.bool, device=state.positions.device)
    return STCAState(
        layers=layers,
        hist_mask=mask,
        positions=one(state.positions),
        hist_ids=one(state.hist_ids),
        hist_rel=one(state.hist_rel),
    )


def storage_nbytes(t: torch.Tensor) -> int:
    """Bytes of the memory ``t`` keeps alive (a view keeps its whole storage)."""
    return t.untyped_storage().nbytes()


def events_nbytes(events: STCAEvents) -> int:
    """Bytes of the memory the tensors of ``events`` keep alive (`drop_oldest`'s views keep
    the evicted events' too, until the next `append_events` copies them out)."""
    total = 0
    for f in fields(events):
        x = getattr(events, f.name)
        x = [x.order, x.sorted_ids] if isinstance(x, MatchTables) else x
        items = x if isinstance(x, list) else [x]
        for item in items:
            for t in item if isinstance(item, tuple) else (item,):
                if isinstance(t, torch.Tensor):
                    total += storage_nbytes(t)
    return total
