"""`longseq.serve.incremental` / `longseq.model.stca_events`: a user state extended by new
events (one by one, in chunks, past a bounded window) equals `Scorer.encode` of the whole
(windowed) history at the request time, in its state tensors and its candidates' scores (fp32,
1e-5), for every STCA variant with ``time_bias``; `UserHistoryCache` tells hits, partial hits and
misses apart and bounds its bytes."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import TASKS, model_config  # noqa: E402
from feature_data import SPECS  # noqa: E402

from longseq.model.embeddings import TableSizes
from longseq.model.ops import tables as tables_mod
from longseq.model.ops.tables import MatchTables
from longseq.model.stca_events import check_incremental, encode_events, request_state
from longseq.serve import Scorer, make_request
from longseq.serve.incremental import IncrementalEncoder, UserHistoryCache

SIZES = TableSizes(num_items=40, num_categories=5, num_actions=3)
ATOL = 1e-5
#: variant -> (overrides of model.stca over ``stca_time``, model.head, reads side features)
VARIANTS: dict[str, tuple[dict, str, bool]] = {
    "time": ({}, "mlp", False),
    "packed": ({"layout": "packed", "kernel": "pairs", "match_bias": True}, "mlp", False),
    "sdpa": ({"kernel": "sdpa", "match_bias": True, "count_channel": True}, "mlp", False),
    "absorbed": ({"kernel": "absorbed", "match_bias": True}, "mlp", False),  # scored packed
    "soft": ({"match_bias": True, "count_channel": True, "soft_match": True}, "mlp", False),
    "rankmixer": ({"match_bias": True}, "rankmixer", False),
    "features": ({"match_bias": True, "count_channel": True}, "mlp", True),
    "features_rankmixer": ({}, "rankmixer", True),
}
#: the request's user/context features (`feature_data.SPECS`), as raw values
REQUEST_FEATS = {"age": 3, "tags": [1, 4], "activity": 5.5, "hour": 13}


def _model(stca: dict, head: str = "mlp", features: bool = False, tower: str = "stca_time"):
    from longseq.model.model import LongSeqModel
    from longseq.model.rankmixer_head import RankMixerConfig

    cfg = model_config(tower)
    if stca:
        cfg.stca = dataclasses.replace(cfg.stca, **stca)
    cfg.head = head
    if head == "rankmixer":
        cfg.rankmixer = RankMixerConfig(dim=16, layers=1, ffn_mult=2.0)
    torch.manual_seed(0)
    model = LongSeqModel(cfg, SIZES, TASKS, features=SPECS if features else ()).eval()
    with torch.no_grad():  # nudged: every bias (match, position, count) matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _scorer(variant: str) -> Scorer:
    stca, head, features = VARIANTS[variant]
    return Scorer(_model(stca, head, features), cache_bytes=0)


def _events(n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` events (item, category, action, ts), oldest -> newest; few items: many matches."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, SIZES.num_items, n)
    ts = 1_000_000 + np.cumsum(rng.integers(1, 5000, n))
    return [item, item % SIZES.num_categories, rng.integers(0, SIZES.num_actions, n), ts]


def _request(scorer: Scorer, request_ts: int):
    """The request's features as a history-less one-request batch (None: the model reads none)."""
    if not scorer.model.features:
        return None
    return make_request([], [], [], [], request_ts, features=scorer.model.features,
                        feature_values=REQUEST_FEATS)  # fmt: skip


def _full(scorer: Scorer, cols: list[np.ndarray], request_ts: int, window: int | None = None):
    """`Scorer.encode` of the whole history ``cols`` at ``request_ts`` (the reference)."""
    feats = scorer.model.features
    values = REQUEST_FEATS if feats else None
    req = make_request(*cols, request_ts, window=window, features=feats, feature_values=values)
    return scorer.encode(req)


def _candidates(scorer: Scorer, cols: list[np.ndarray]):
    """Candidates: some of the history's items (matches) and others, with their features."""
    items = np.concatenate([cols[0][-3:], cols[0][:2], [7, 19, 33]])
    k = len(items)
    feats = None
    if scorer.model.features:
        feats = {"creator": [i % 7 for i in range(k)], "genres": [[i % 4] for i in range(k)],
                 "duration": [30.0 * (i + 1) for i in range(k)]}  # fmt: skip
    return items, items % SIZES.num_categories, feats


def _assert_same(scorer: Scorer, got, want, cols: list[np.ndarray]) -> None:
    """``got`` (incremental) equals ``want`` (`Scorer.encode`), in the same layout (the
    tower's own: padded for a padded tower, so its own kernel scores it): every state tensor,
    the head's user side and the candidates' scores."""
    assert torch.equal(got.hist_lengths, want.hist_lengths)
    absorbed = scorer.model.interaction.tower.cfg.kernel == "absorbed"
    assert got.packed == (want.packed or absorbed)  # absorbed: X̃ padded, (K, V) packed
    for g, w in zip(
        [] if absorbed else got.state.layers, [] if absorbed else want.state.layers, strict=True
    ):
        for gt, wt in zip(g, w, strict=True):
            torch.testing.assert_close(gt, wt, atol=ATOL, rtol=0)
    if not got.packed:
        assert torch.equal(got.state.hist_mask, want.state.hist_mask)
    for name in ("positions", "hist_ids", "hist_rel"):
        g, w = getattr(got.state, name), getattr(want.state, name)
        assert (g is None) == (w is None), name
        if g is not None and not absorbed:
            torch.testing.assert_close(g, w, atol=ATOL, rtol=0, msg=name)
    for name in ("head_tokens", "features"):
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), name
        if g is not None:
            torch.testing.assert_close(g, w, atol=ATOL, rtol=0, msg=name)
    items, cats, feats = _candidates(scorer, cols)
    s_got, s_want = scorer.score(got, items, cats, feats), scorer.score(want, items, cats, feats)
    assert s_want.std() > 1e-4  # the candidates are told apart
    torch.testing.assert_close(s_got, s_want, atol=ATOL, rtol=0)


def _check(enc: IncrementalEncoder, user, cols, upto: int, request_ts: int) -> None:
    got = enc.user_side(user, request_ts, _request(enc.scorer, request_ts))
    want = _full(enc.scorer, [c[:upto] for c in cols], request_ts, enc.window)
    _assert_same(enc.scorer, got, want, [c[:upto] for c in cols])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_appends_one_by_one_and_in_chunks_equal_the_full_encode(variant: str) -> None:
    scorer = _scorer(variant)
    enc = IncrementalEncoder(scorer)
    cols = _events(34)
    empty = enc.encode(*(c[:0] for c in cols))  # a user without events yet: same scores
    t0, (items, cats, feats) = int(cols[3][0]), _candidates(scorer, cols)
    got = enc.user_side(empty, t0, _request(scorer, t0))
    want = _full(scorer, [c[:0] for c in cols], t0)  # padded to one masked event: no state check
    s_got, s_want = scorer.score(got, items, cats, feats), scorer.score(want, items, cats, feats)
    torch.testing.assert_close(s_got, s_want, atol=ATOL, rtol=0)
    user = first = enc.extend(empty, *(c[:3] for c in cols))
    n = 3
    for _ in range(4):  # one event at a time
        user = enc.extend(user, *(c[n : n + 1] for c in cols))
        n += 1
        _check(enc, user, cols, n, int(cols[3][n - 1]) + 60)
    for size in (5, 1, 7, 0, 14):  # in chunks (an empty one changes nothing)
        user = enc.extend(user, *(c[n : n + size] for c in cols))
        n += size
        _check(enc, user, cols, n, int(cols[3][n - 1]) + 3600)
    assert n == len(cols[0]) == len(user) == user.seen
    assert len(empty) == 0 and len(first) == first.seen == 3  # extend changes no state
    # a later request, no new event: only the time-delta buckets move
    _check(enc, user, cols, n, int(cols[3][-1]) + 86_400 * 30)


@pytest.mark.parametrize("variant", ["time", "packed", "soft", "rankmixer", "features_rankmixer"])
def test_a_bounded_window_evicts_the_oldest_events(variant: str) -> None:
    scorer = _scorer(variant)
    w = 9
    enc = IncrementalEncoder(scorer, window=w)
    cols = _events(60, seed=1)
    user = enc.encode(*(c[:4] for c in cols))
    n = 4
    for size in (3, 1, 5, 2, 12, 1, 9, 4):  # past the window; 12 and 9: every cached event goes
        user = enc.extend(user, *(c[n : n + size] for c in cols))
        n += size
        assert len(user) == min(n, w) and user.seen == n
        assert torch.equal(user.ts, torch.from_numpy(cols[3][max(n - w, 0) : n]))
        _check(enc, user, cols, n, int(cols[3][n - 1]) + 3600)
    # the encoded window of a long history is its last w events; the state stays compact
    fresh = enc.encode(*(c[:n] for c in cols))
    assert len(fresh) == w and fresh.seen == n
    assert user.nbytes() == fresh.nbytes()
    _check(enc, fresh, cols, n, int(cols[3][n - 1]) + 7200)


def test_kept_match_tables_are_a_fresh_index_and_score_as_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The states keep their events indexed by id across appends and evictions (exactly a fresh
    `MatchTables.build`), and candidates scored through them equal a scorer without them."""
    monkeypatch.setattr(tables_mod, "MAX_MATCHED_SHARE", 1.0)  # few ids here: keep the tables
    scorer = _scorer("sdpa")  # match bias + count channel
    plain = Scorer(scorer.model, cache_bytes=0, match_tables=False)
    w = 12
    enc = IncrementalEncoder(scorer, window=w)
    cols = _events(50, seed=3)
    user, n = enc.encode(*(c[:5] for c in cols)), 5
    for size in (1, 4, 9, 2, 11):  # past the window
        user, n = enc.extend(user, *(c[n : n + size] for c in cols)), n + size
        assert user.events.tables is not None and user.events.hist_ids is not None
        fresh = MatchTables.build(user.events.hist_ids)
        assert torch.equal(user.events.tables.order, fresh.order)
        assert torch.equal(user.events.tables.sorted_ids, fresh.sorted_ids)
        ts = int(cols[3][n - 1]) + 600
        got = enc.user_side(user, ts)
        want = plain.encode(make_request(*(c[:n] for c in cols), ts, window=w))
        assert got.state.tables is not None and want.state.tables is None
        items, cats, _ = _candidates(scorer, [c[:n] for c in cols])
        s_got, s_want = scorer.score(got, items, cats), plain.score(want, items, cats)
        assert s_want.std() > 1e-4
        torch.testing.assert_close(s_got, s_want, atol=ATOL, rtol=0)
    assert scorer.encode(make_request(*cols, int(cols[3][-1]))).state.tables is not None
    # a state without kept tables (a file written before they were kept) gets them back
    bare = dataclasses.replace(user, events=dataclasses.replace(user.events, tables=None))
    grown = enc.extend(bare, *(c[n : n + 2] for c in cols))
    assert grown.events.tables is not None and grown.events.hist_ids is not None
    assert torch.equal(grown.events.tables.order, MatchTables.build(grown.events.hist_ids).order)
    # towers that never score through tables keep none (they would only cost bytes)
    for variant in ("absorbed", "packed", "soft"):
        other = IncrementalEncoder(_scorer(variant))
        assert other.encode(*(c[:5] for c in cols)).events.tables is None


def test_unsupported_models_raise() -> None:
    with pytest.raises(ValueError, match="model.tower=stca"):
        IncrementalEncoder(Scorer(_model({}, tower="pooling"), cache_bytes=0))
    time_free = Scorer(_model({}, tower="stca_kv_padded"), cache_bytes=0)
    with pytest.raises(ValueError, match="time_bias=true"):
        IncrementalEncoder(time_free)
    with pytest.raises(ValueError, match="time_bias=true"):
        check_incremental(time_free.model.interaction.tower)  # type: ignore[arg-type]


def test_bad_inputs_raise() -> None:
    scorer = _scorer("features")
    with pytest.raises(ValueError, match="window must be >= 1"):
        IncrementalEncoder(scorer, window=0)
    enc = IncrementalEncoder(scorer)
    cols = _events(8)
    user = enc.encode(*cols)
    tower = enc.tower
    with pytest.raises(ValueError, match=r"dt_bucket must be \[8\]"):
        request_state(tower, user.events, torch.zeros(7, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"dt_bucket must be \[8\]"):
        request_state(tower, user.events, torch.zeros(1, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="time_bias"):  # the match ids need the dt column
        encode_events(tower, torch.zeros(2, 16))
    with pytest.raises(ValueError, match="same length"):
        enc.encode(cols[0], cols[1][:-1], cols[2], cols[3])
    with pytest.raises(ValueError, match="time order"):
        enc.encode(cols[0], cols[1], cols[2], cols[3][::-1].copy())
    with pytest.raises(ValueError, match="must not be older"):
        enc.extend(user, [1], [1], [0], [int(cols[3][-1]) - 1])
    with pytest.raises(ValueError, match="hist_item_id: id 40"):
        enc.extend(user, [40], [0], [0], [int(cols[3][-1]) + 1])
    with pytest.raises(ValueError, match="user/context features"):
        enc.user_side(user, int(cols[3][-1]))


def test_user_history_cache() -> None:
    scorer = _scorer("rankmixer")
    enc = IncrementalEncoder(scorer)
    rows: list[int] = []  # events through the history FFNs
    tower = enc.tower
    inner = tower.encode_history

    def counted(x: torch.Tensor) -> list[torch.Tensor]:
        rows.append(int(x.shape[0]))
        return inner(x)

    cache = UserHistoryCache(enc, max_bytes=1 << 30)
    cols = _events(40, seed=2)

    def ask(user_id: int, history: list[np.ndarray], request_ts: int, full=None):
        """(hits, partial hits, misses, events encoded) after this request; its user side
        equals the full encode of ``full`` (default: ``history``)."""
        rows.clear()
        tower.encode_history = counted  # type: ignore[method-assign]
        got = cache.request(user_id, *history, request_ts)
        del tower.encode_history  # the reference below is not counted
        full = history if full is None else full
        _assert_same(scorer, got, _full(scorer, full, request_ts), full)
        return cache.hits, cache.partial_hits, cache.misses, sum(rows)

    def part(lo: int, hi: int) -> list[np.ndarray]:
        return [c[lo:hi] for c in cols]

    t = int(cols[3][-1]) + 100
    assert ask(1, part(0, 20), t) == (0, 0, 1, 20)  # a new user: a miss
    assert ask(1, part(0, 20), t + 999) == (1, 0, 1, 0)  # the same history, later: a hit
    assert ask(1, part(0, 25), t) == (1, 1, 1, 5)  # 5 new events: only they are encoded
    # a request with only its most recent events: the cached ones before them stay
    assert ask(1, part(12, 28), t, full=part(0, 28)) == (1, 2, 1, 3)
    # not an extension of the cached history: the same newest event, an older one changed
    other = part(0, 28)
    other[2] = other[2].copy()
    other[2][5] = (other[2][5] + 1) % SIZES.num_actions
    assert ask(1, other, t) == (1, 2, 2, 28)
    # a history without the cached newest event: a miss
    assert ask(1, part(0, 10), t) == (1, 2, 3, 10)
    assert cache.lru.evictions == 0 and len(cache.lru) == 1
    # another model version: another key
    cache.version = 1
    assert ask(1, part(0, 10), t) == (1, 2, 4, 10) and len(cache.lru) == 2


def test_user_history_cache_is_a_byte_bounded_lru() -> None:
    scorer = _scorer("time")
    enc = IncrementalEncoder(scorer, window=12)
    cols = _events(30, seed=3)
    size = enc.encode(*(c[:12] for c in cols)).nbytes()
    cache = UserHistoryCache(enc, max_bytes=2 * size + size // 2)  # room for two users
    t = int(cols[3][-1]) + 10
    for user_id in (1, 2, 1, 3):  # 3 evicts 2, the least recently used
        cache.request(user_id, *(c[:20] for c in cols), t)
    assert (cache.hits, cache.partial_hits, cache.misses) == (1, 0, 3)
    assert cache.lru.evictions == 1 and cache.lru.bytes <= cache.lru.max_bytes
    assert (1, 0) in cache.lru and (3, 0) in cache.lru and (2, 0) not in cache.lru
    got = cache.request(2, *(c[:26] for c in cols), t)  # evicted: a miss (1 goes), windowed
    assert cache.misses == 4 and cache.lru.evictions == 2 and (1, 0) not in cache.lru
    _assert_same(scorer, got, _full(scorer, [c[:26] for c in cols], t, 12), cols)
    got = cache.request(3, *cols, t)  # a partial hit past the window
    assert cache.partial_hits == 1 and len(cache.lru.peek((3, 0))) == 12
    _assert_same(scorer, got, _full(scorer, cols, t, 12), cols)
