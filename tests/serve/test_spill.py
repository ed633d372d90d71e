"""`longseq.serve.spill.FileTier`, the second tier of `UserHistoryCache`: a state round-trips a
file exactly (every layer form, None fields; scores after promotion equal `Scorer.encode`'s,
fp32 1e-5), states the first tier evicts are served from files as hits / partial hits, the
tier's byte bound deletes files; `UserStateCache.on_evict` sees exactly the evicted keys."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_incremental import _assert_same, _events, _full, _request, _scorer  # noqa: E402

from longseq.model.stca_events import STCAEvents
from longseq.serve import UserStateCache
from longseq.serve.incremental import IncrementalEncoder, IncrementalUser, UserHistoryCache
from longseq.serve.incremental_state import user_from_dict
from longseq.serve.spill import FileTier


def _same_user(got: IncrementalUser, want: IncrementalUser) -> None:
    """Every field equal: tensor vs tuple layers, None fields, dtypes, values, ``seen``."""

    def same(g, w) -> None:  # noqa: ANN001
        assert type(g) is type(w)
        if isinstance(w, tuple):
            assert len(g) == len(w)
            for a, b in zip(g, w):
                same(a, b)
        elif isinstance(w, torch.Tensor):
            assert g.dtype == w.dtype and g.device == w.device and torch.equal(g, w)
        else:
            assert g == w

    assert len(got.events.layers) == len(want.events.layers)
    for g, w in zip(got.events.layers, want.events.layers):
        same(g, w)
    for name in ("hist_ids", "hist_rel"):
        same(getattr(got.events, name), getattr(want.events, name))
    for name in ("item", "category", "action", "ts", "token_sum", "seen"):
        same(getattr(got, name), getattr(want, name))
    assert got.nbytes() == want.nbytes()


def _files(tier: FileTier) -> list[str]:
    return sorted(p.name for p in tier.directory.iterdir())


def test_every_layer_form_round_trips_exactly(tmp_path: Path) -> None:
    kv = torch.randn(5, 2, 4)
    layers = [(kv, kv + 1), torch.randn(5, 8, dtype=torch.float64), (torch.randn(5, 2, 4),) * 2]
    cols = [torch.arange(5, dtype=torch.int64) + i for i in range(4)]
    events = STCAEvents(layers, torch.ones(5, 2, dtype=torch.int64), torch.randn(5, 3))
    full = IncrementalUser(events, *cols, torch.randn(8, dtype=torch.float64), 9)
    bare = IncrementalUser(STCAEvents([kv]), *cols, None, 5)  # no match ids, no soft match, no sum
    empty = IncrementalUser(STCAEvents([(kv[:0], kv[:0])]), *(c[:0] for c in cols), None, 0)
    tier = FileTier(tmp_path / "a" / "b", max_bytes=1 << 20)  # created with its parents
    for key, user in (((1, "v"), full), ((2, "v"), bare), ((3, "v"), empty)):
        assert tier.put(key, user) and key in tier
        path = tier.directory / tier._name(key)
        loaded = torch.load(path, weights_only=True, mmap=True)  # plain data, memory-mapped
        _same_user(user_from_dict(loaded), user)
        got = tier.take(key)
        assert got is not None and not path.exists() and key not in tier  # take removes it
        _same_user(got, user)
    assert tier.take((1, "v")) is None and _files(tier) == [] and tier.bytes == 0
    assert (tier.hits, tier.misses) == (3, 1)
    with pytest.raises(ValueError, match="format 1"):
        user_from_dict({"format": 2})


@pytest.mark.parametrize("variant", ["time", "soft", "rankmixer", "features"])
def test_scores_after_promotion_equal_the_full_encode(tmp_path: Path, variant: str) -> None:
    scorer = _scorer(variant)
    enc = IncrementalEncoder(scorer)
    cols = _events(30, seed=4)
    user = enc.encode(*(c[:20] for c in cols))
    tier = FileTier(tmp_path, max_bytes=1 << 20)
    assert tier.put((7, 0), user)
    got = tier.take((7, 0))
    assert got is not None
    _same_user(got, user)
    t = int(cols[3][19]) + 3600
    side = enc.user_side(got, t, _request(scorer, t))
    _assert_same(scorer, side, _full(scorer, [c[:20] for c in cols], t), [c[:20] for c in cols])
    more = enc.extend(got, *(c[20:] for c in cols))  # extending a memory-mapped state
    t = int(cols[3][-1]) + 60
    _assert_same(scorer, enc.user_side(more, t, _request(scorer, t)), _full(scorer, cols, t), cols)


def test_a_user_evicted_from_the_first_tier_is_served_from_the_second(tmp_path: Path) -> None:
    scorer = _scorer("rankmixer")
    enc = IncrementalEncoder(scorer, window=12)
    cols = _events(30, seed=5)
    size = enc.encode(*(c[:12] for c in cols)).nbytes()
    tier = FileTier(tmp_path / "tier2", max_bytes=1 << 20)
    cache = UserHistoryCache(enc, max_bytes=size + size // 2, second_tier=tier)  # one user
    t = int(cols[3][-1]) + 10
    cache.request(1, *(c[:20] for c in cols), t)
    cache.request(2, *(c[:20] for c in cols), t)  # 1 goes to a file
    assert cache.lru.evictions == 1 and (1, 0) in tier and (1, 0) not in cache.lru
    assert _files(tier) == [tier._name((1, 0))]
    got = cache.request(1, *(c[:20] for c in cols), t + 99)  # a hit from the file; 2 spills
    assert (cache.hits, cache.partial_hits, cache.misses, cache.tier2_hits) == (1, 0, 2, 1)
    assert (1, 0) in cache.lru and (1, 0) not in tier and (2, 0) in tier
    _assert_same(scorer, got, _full(scorer, [c[:20] for c in cols], t + 99, 12), cols)
    got = cache.request(2, *(c[:26] for c in cols), t)  # a partial hit from the file
    assert (cache.hits, cache.partial_hits, cache.misses, cache.tier2_hits) == (1, 1, 2, 2)
    _assert_same(scorer, got, _full(scorer, [c[:26] for c in cols], t, 12), cols)
    assert len(cache.lru.peek((2, 0))) == 12 and (1, 0) in tier
    assert tier.stats()["hits"] == 2 and tier.stats()["entries"] == 1
    # found in the second tier but not an extension of it: a miss that replaces it
    other = [c[:20].copy() for c in cols]
    other[2][15] = (other[2][15] + 1) % 3  # in the cached window (events 8 to 19)
    got = cache.request(1, *other, t)
    assert (cache.misses, cache.tier2_hits, tier.hits) == (3, 2, 3)
    assert (1, 0) not in tier and (2, 0) in tier
    _assert_same(scorer, got, _full(scorer, other, t, 12), other)


def test_the_byte_bound_deletes_the_least_recently_used_files(tmp_path: Path) -> None:
    enc = IncrementalEncoder(_scorer("time"))
    cols = _events(16, seed=6)
    users = {k: enc.encode(*(c[: 10 + k] for c in cols)) for k in range(4)}
    probe = FileTier(tmp_path / "probe", max_bytes=1 << 20)
    sizes = {}
    for k, u in users.items():
        probe.put(k, u)
        sizes[k] = (probe.directory / probe._name(k)).stat().st_size
    assert probe.bytes == sum(sizes.values())
    probe.clear()
    assert _files(probe) == [] and len(probe) == 0 and probe.bytes == 0
    tier = FileTier(tmp_path / "t", max_bytes=sizes[0] + sizes[1] + sizes[2] // 2)
    assert tier.put(0, users[0]) and tier.put(1, users[1]) and tier.put(2, users[2])
    assert 0 not in tier and _files(tier) == sorted(tier._name(k) for k in (1, 2))
    assert tier.take(1) is not None and tier.put(3, users[3])  # take freed room: nothing goes
    assert _files(tier) == sorted(tier._name(k) for k in (2, 3)) and tier.evictions == 1
    assert (
        tier.bytes == sizes[2] + sizes[3] == sum(f.stat().st_size for f in tier.directory.iterdir())
    )
    small = FileTier(tmp_path / "s", max_bytes=sizes[0] - 1)
    assert not small.put(0, users[0]) and _files(small) == [] and small.rejected == 1
    assert tier.stats() == {"hits": 1, "misses": 0, "evictions": 1, "rejected": 0, "entries": 2,
                            "bytes": sizes[2] + sizes[3], "max_bytes": tier.max_bytes}  # fmt: skip


def test_a_bad_directory_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ValueError, match=f"second tier directory {a_file}"):
        FileTier(a_file, 1 << 20)
    with pytest.raises(ValueError, match="second tier directory"):
        FileTier(a_file / "below", 1 << 20)
    with pytest.raises(ValueError, match="max_bytes must be >= 0"):
        FileTier(tmp_path / "d", -1)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes anywhere: the check itself
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match=f"{locked} is not writable"):
        FileTier(locked, 1 << 20)


def test_on_evict_sees_the_evicted_keys_only() -> None:
    seen: list[tuple] = []
    c = UserStateCache(100, on_evict=lambda key, state, nbytes: seen.append((key, state, nbytes)))
    assert c.put("a", 1, 40) and c.put("b", 2, 40) and c.put("a", 3, 50)  # replaced: no call
    assert seen == [] and c.get("b") == 2
    assert not c.put("huge", 4, 101) and seen == []  # rejected: no call
    assert c.put("c", 5, 70)  # 160 > 100: a (least recently used), then b
    assert seen == [("a", 3, 50), ("b", 2, 40)] and c.evictions == 2
    c.clear()
    assert seen == [("a", 3, 50), ("b", 2, 40)] and len(c) == 0
