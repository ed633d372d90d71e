"""User states that live across requests: extended by new events, keyed by user.

A model trained with ``model.stca.time_bias=true`` has history tokens, history FFNs, keys and
values that depend on each event alone (`longseq.model.stca_events`). Its user state is then
kept per *user*, not per request:

* `IncrementalEncoder.encode` computes a user's `IncrementalUser` once;
* `IncrementalEncoder.extend` appends ``n`` new events at O(n) per layer (only the new events
  go through the embedding lookup, tokenizer, FFNs and projections) and, with a ``window``,
  evicts the oldest events beyond it;
* `IncrementalEncoder.user_side` makes the `UserSide` of one request at its request time (the
  events' positions and time-delta buckets: O(L) integers) that `Scorer.score` scores
  candidates against.

Each equals what `Scorer.encode` computes from the whole (windowed) history at that request
time, to float rounding (tests/serve/test_incremental.py). `UserHistoryCache` keeps the states
of many users in a byte-bounded LRU and tells a returning user's request apart: a **hit** (no
new event), a **partial hit** (new events appended) or a **miss** (a new user, an evicted one,
or a history that is not the cached one plus new events). The states its LRU evicts may go to a
second tier (``second_tier``: `longseq.serve.spill.FileTier`, files) and come back from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from longseq.data.collate import dt_buckets
from longseq.model.ops.tables import MatchTables
from longseq.model.stca import STCATower
from longseq.model.stca_events import (
    STCAEvents,
    append_events,
    check_incremental,
    drop_oldest,
    encode_events,
    padded_state,
    request_state,
)
from longseq.model.stca_tables import tower_uses_tables
from longseq.model.user_side import UserSide, user_features
from longseq.serve.cache import UserStateCache
from longseq.serve.features import row_request_kjt
from longseq.serve.incremental_state import IncrementalUser
from longseq.serve.scorer import Scorer, make_request

if TYPE_CHECKING:
    from longseq.serve.spill import FileTier

#: the history tables a token reads, in `Tokenizer.events` order
EVENT_TABLES = ("item", "category", "action")


def _columns(item, category, action, ts) -> list[torch.Tensor]:  # noqa: ANN001
    """The events' columns as ``[n]`` int64 tensors: one-dimensional, of one length, in time
    order (a ``ValueError`` otherwise)."""
    cols = [torch.as_tensor(np.asarray(v), dtype=torch.int64) for v in (item, category, action, ts)]
    if any(c.ndim != 1 or c.shape != cols[0].shape for c in cols):
        shapes = [list(c.shape) for c in cols]
        raise ValueError(f"item, category, action and ts must be [n] of the same length: {shapes}")
    if bool((cols[3][1:] < cols[3][:-1]).any()):
        raise ValueError("events must be in time order (oldest -> newest): ts decreases")
    return cols


class IncrementalEncoder:
    """Incremental user states of a `Scorer`'s model (module doc).

    Args:
        scorer: the scorer whose model the states belong to (its model needs the STCA tower
            with ``time_bias``; a ``ValueError`` says so otherwise).
        window: keep only the most recent ``window`` events (None: every event).
    """

    def __init__(self, scorer: Scorer, window: int | None = None) -> None:
        model = scorer.model
        tower = model.interaction.tower
        check_incremental(tower)  # type: ignore[arg-type]
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 events (None: the whole history), got {window}")
        self.scorer, self.model, self.window = scorer, model, window
        self.tower: STCATower = tower  # type: ignore[assignment]
        self.needs_mean = model.interaction.head_needs_history_mean
        self.tables = model.ec.embeddings
        #: the states keep their events indexed by id (`MatchTables`) across requests
        self._keeps_tables = scorer.match_tables and tower_uses_tables(self.tower)

    def _tokens(self, item, category, action, ts) -> tuple[torch.Tensor, torch.Tensor | None]:  # noqa: ANN001
        """History tokens ``[n, d]`` and the tower's history ids of ``n`` events (every id
        checked against its table first, as `Scorer.encode` does)."""
        newest = int(ts[-1]) if ts.numel() else 0  # the dt buckets are not read
        self.scorer.check_ids(make_request(item, category, action, ts, newest).sparse)
        dev = self.scorer.device
        emb = [self.tables[t](c.to(dev)) for t, c in zip(EVENT_TABLES, (item, category, action))]
        x = self.model.interaction.tokens.events(*emb, torch.zeros_like(emb[0]), None)
        by_feature = {
            "item_id": item.to(dev),
            "category_id": category.to(dev),
            "dt_bucket": torch.zeros_like(item, device=dev),  # unused: the request's, later
        }
        return x, self.tower.history_ids(by_feature)

    @torch.no_grad()
    def _encode(self, item, category, action, ts) -> tuple[STCAEvents, torch.Tensor | None]:  # noqa: ANN001
        x, ids = self._tokens(item, category, action, ts)
        events = encode_events(self.tower, x, ids)
        return events, (x.double().sum(0) if self.needs_mean else None)

    def encode(
        self,
        item: Sequence[int] | np.ndarray | torch.Tensor,
        category: Sequence[int] | np.ndarray | torch.Tensor,
        action: Sequence[int] | np.ndarray | torch.Tensor,
        ts: Sequence[int] | np.ndarray | torch.Tensor,
    ) -> IncrementalUser:
        """A user's state from their history (oldest -> newest; only the most recent
        ``window`` events are encoded)."""
        cols = _columns(item, category, action, ts)
        n = cols[0].numel()
        keep = n if self.window is None else min(n, self.window)
        cols = [c[n - keep :].clone() for c in cols]  # its own, compact memory
        events, token_sum = self._encode(*cols)
        if self._keeps_tables and events.hist_ids is not None:  # then kept up to date by extend
            events = dataclasses.replace(events, tables=MatchTables.build(events.hist_ids))
        return IncrementalUser(events, *cols, token_sum, n)

    def extend(
        self,
        user: IncrementalUser,
        item: Sequence[int] | np.ndarray | torch.Tensor,
        category: Sequence[int] | np.ndarray | torch.Tensor,
        action: Sequence[int] | np.ndarray | torch.Tensor,
        ts: Sequence[int] | np.ndarray | torch.Tensor,
    ) -> IncrementalUser:
        """``user``'s state with new events appended (oldest -> newest, none older than the
        user's newest), the oldest beyond ``window`` evicted. ``user`` is not changed."""
        cols = _columns(item, category, action, ts)
        n = cols[0].numel()
        if n == 0:
            return user
        if len(user) and int(cols[3][0]) < int(user.ts[-1]):
            raise ValueError(
                f"new events must not be older than the user's newest cached event "
                f"(ts {int(cols[3][0])} < {int(user.ts[-1])})"
            )
        if self.window is not None and n >= self.window:  # every cached event leaves
            fresh = self.encode(*cols)
            fresh.seen = user.seen + n
            return fresh
        raw = (user.item, user.category, user.action, user.ts)
        drop = 0 if self.window is None else max(0, len(user) + n - self.window)
        token_sum = user.token_sum
        if drop and token_sum is not None:  # the evicted events' tokens, recomputed (O(drop))
            with torch.no_grad():
                gone, _ = self._tokens(*(t[:drop] for t in raw))
            token_sum = token_sum - gone.double().sum(0)
        new_events, new_sum = self._encode(*cols)
        if token_sum is not None:
            assert new_sum is not None  # the same head: the same needs_mean
            token_sum = token_sum + new_sum
        # evict first, then append: the concatenation copies, so nothing keeps evicted memory
        events = append_events(drop_oldest(user.events, drop), new_events)
        if self._keeps_tables and events.tables is None and events.hist_ids is not None:
            # a state without them (from a file written before they were kept): built once
            events = dataclasses.replace(events, tables=MatchTables.build(events.hist_ids))
        merged = [torch.cat([t[drop:], c]) for t, c in zip(raw, cols, strict=True)]
        return IncrementalUser(events, *merged, token_sum, user.seen + n)

    @torch.no_grad()
    def user_side(self, user: IncrementalUser, request_ts: int, request=None) -> UserSide:  # noqa: ANN001
        """The `UserSide` of one request of ``user`` at ``request_ts`` (seconds, as the
        events' ``ts``), to score candidates with `Scorer.score`. ``request``: a one-request
        `RequestBatch` holding the request's user/context features (``make_request`` with
        ``features`` and ``feature_values``; its history may be empty), needed when the model
        reads such features."""
        inter, dev = self.model.interaction, self.scorer.device
        dt = torch.from_numpy(dt_buckets(request_ts - user.ts.numpy())).to(dev)
        state = request_state(self.tower, user.events, dt)
        feats: dict[str, torch.Tensor] = {}
        if inter.side.request_feats:
            if request is None:
                raise ValueError(
                    "the model reads user/context features: pass the request's features as "
                    "request=make_request(..., features=..., feature_values=...)"
                )
            keys = [f.key for f in self.model.features if f.per_request and f.sparse]
            kjt = row_request_kjt(request.sparse, 0, keys)
            self.scorer.check_ids(kjt)
            emb = self.model.ec(kjt.to(dev))
            feats = user_features(self.model, emb, request.dense[:1].to(dev))
        mean = None
        if self.needs_mean:
            assert user.token_sum is not None
            mean = (user.token_sum / max(len(user), 1)).to(next(self.model.parameters()).dtype)
            mean = mean[None].to(dev)
        tokens, vec = inter.head_user_inputs(mean, feats)
        lengths = torch.tensor([len(user)], device=dev)
        padded = padded_state(self.tower, state)  # the tower's own kernel scores it
        if padded is not None:  # with the kept tables (or ones built now: a state from a file)
            return self.scorer.indexed(
                UserSide(padded, lengths, False, tokens, vec), user.events.tables
            )
        return UserSide(state, lengths, True, tokens, vec)


class UserHistoryCache:
    """Incremental user states of many users, keyed by ``(user_id, version)`` (``version``:
    the model's, so that a new model never reads an old model's states), in a byte-bounded LRU
    (`UserStateCache`).

    `request` takes a user's history as the request carries it (oldest -> newest) and returns
    its `UserSide`: a **hit** when the history is the cached one, a **partial hit** when it is
    the cached one plus new events at the end (only those are encoded), else a **miss** (full
    encode). A history is taken for "the cached one plus new events" when it holds the cached
    newest event (same item and time) and the events up to it equal the cached ones (item,
    category, action, time; as many as both have): the events after it are the new ones (a
    user's log only grows at its end). The request may carry the whole log or only its most
    recent part: a cached state keeps its older events (up to ``window``), so the state is
    then that of the cached events plus the new ones, not of the request's shorter history.
    Counters: ``hits``, ``partial_hits``, ``misses`` (and the LRU's ``evictions``);
    ``tier2_hits``: the hits and partial hits served by a state taken from the second tier.

    Args:
        encoder: the `IncrementalEncoder` (its model and window).
        max_bytes: the cache's bound.
        version: the model version of the keys.
        second_tier: where the states the LRU evicts go (`longseq.serve.spill.FileTier`); a
            request missing the LRU takes its state from there back into the LRU.
    """

    def __init__(
        self,
        encoder: IncrementalEncoder,
        max_bytes: int,
        version: Hashable = 0,
        second_tier: FileTier | None = None,
    ) -> None:
        self.encoder, self.version, self.second_tier = encoder, version, second_tier
        spill = None if second_tier is None else (lambda key, state, _: second_tier.put(key, state))
        self.lru = UserStateCache(max_bytes, on_evict=spill)
        self.hits = self.partial_hits = self.misses = self.tier2_hits = 0

    @staticmethod
    def _fresh(user: IncrementalUser | None, cols: list[torch.Tensor]) -> int | None:
        """Where ``cols``' new events begin for ``user``: just after the last event equal to
        the cached newest (same item and time) whose run of events up to it equals the cached
        events' most recent ones (item, category, action, time); None when there is none."""
        if user is None or not len(user):
            return None
        cached = (user.item, user.category, user.action, user.ts)
        same = (cols[0] == user.item[-1]) & (cols[3] == user.ts[-1])
        for end in reversed(torch.nonzero(same).flatten().tolist()):
            k = min(end + 1, len(user))
            if all(torch.equal(c[end + 1 - k : end + 1], u[-k:]) for c, u in zip(cols, cached)):
                return end + 1
        return None

    def request(
        self,
        user_id: int,
        item: Sequence[int] | np.ndarray | torch.Tensor,
        category: Sequence[int] | np.ndarray | torch.Tensor,
        action: Sequence[int] | np.ndarray | torch.Tensor,
        ts: Sequence[int] | np.ndarray | torch.Tensor,
        request_ts: int,
        request=None,  # noqa: ANN001 - a RequestBatch with the request's features
    ) -> UserSide:
        """The `UserSide` of ``user_id``'s request at ``request_ts`` with this history (see the
        class doc); ``request`` as in `IncrementalEncoder.user_side`."""
        enc = self.encoder
        cols = _columns(item, category, action, ts)
        key = (int(user_id), self.version)
        cached, tier2 = self.lru.peek(key), False
        if cached is None and self.second_tier is not None:
            cached = self.second_tier.take(key)
            tier2 = cached is not None
        start = self._fresh(cached, cols)
        if cached is not None and start is not None:
            if tier2:
                self.tier2_hits += 1
            else:
                self.lru.get(key)  # most recently used now
            if start == len(cols[0]):
                self.hits += 1
                state = cached
            else:
                self.partial_hits += 1
                state = enc.extend(cached, *(c[start:] for c in cols))
        else:
            self.misses += 1
            state = enc.encode(*cols)
        if state is not cached or tier2:  # a state from the second tier is promoted
            self.lru.put(key, state, state.nbytes())
        return enc.user_side(state, request_ts, request)
