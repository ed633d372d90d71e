"""`UserStateCache` (LRU by bytes, counters) and the `Scorer`'s use of it: a hit skips the
tower's user side, a new history version misses; per-request scoring equals batch scoring."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import TASKS, build  # noqa: E402

from longseq.serve import Scorer, UserStateCache, make_request


def test_cache_evicts_least_recently_used_by_bytes() -> None:
    c = UserStateCache(100)
    assert c.put("a", 1, 40) and c.put("b", 2, 40)
    assert c.get("a") == 1  # a is now the most recent
    assert c.put("c", 3, 40)  # 120 > 100: b (least recently used) goes
    assert "b" not in c and "a" in c and "c" in c
    assert c.get("b") is None
    assert c.put("c", 4, 50) and c.bytes == 90 and c.get("c") == 4  # replaced, not doubled
    assert not c.put("huge", 5, 101) and "huge" not in c
    assert c.stats() == {"hits": 2, "misses": 1, "evictions": 1, "rejected": 1, "entries": 2,
                         "bytes": 90, "max_bytes": 100}  # fmt: skip
    assert UserStateCache(0).put("a", 1, 1) is False
    with pytest.raises(ValueError, match="max_bytes"):
        UserStateCache(-1)


@pytest.fixture(scope="module")
def table(tiny_data: Path):
    from longseq.data.shards import list_parquet_files

    return pq.read_table(list_parquet_files(tiny_data / "test")[0]).slice(0, 6)


def _counting(scorer: Scorer) -> list[int]:
    """Count calls of the tower's user side (either layout)."""
    calls = [0]
    tower = scorer.model.interaction.tower
    for name in ("encode_user", "encode_user_packed"):
        inner = getattr(tower, name)

        def wrapped(*a, _inner=inner, **k):
            calls[0] += 1
            return _inner(*a, **k)

        setattr(tower, name, wrapped)
    return calls


@pytest.mark.parametrize("name", ["stca_kv_padded", "stca_pairs_packed", "din"])
def test_hits_skip_the_user_side_and_score_the_same(name: str, tiny_data: Path, table) -> None:
    from longseq.data.collate import collate

    scorer = Scorer(build(name, tiny_data))
    calls = _counting(scorer)
    batch = collate(table, TASKS)
    want = scorer.score_batch(batch)
    calls[0] = 0  # score_batch ran the user side once, for the whole batch
    versions = list(range(batch.batch_size))
    first = scorer.score_requests(batch, versions)
    assert calls[0] == batch.batch_size and scorer.cache.stats()["misses"] == batch.batch_size
    again = scorer.score_requests(batch, versions)
    assert calls[0] == batch.batch_size  # every request hit: no user side ran
    assert scorer.cache.hits == batch.batch_size
    assert torch.equal(first, again)
    torch.testing.assert_close(first, want, atol=1e-5, rtol=0)
    # a new history version of request 0 misses; the others still hit
    scorer.score_requests(batch, [99] + versions[1:])
    assert calls[0] == batch.batch_size + 1
    # the per-request API: encode once, score candidates in any chunks
    user = scorer.encode(batch, 2, version=("v", 1))
    assert scorer.encode(batch, 2, version=("v", 1)) is user and calls[0] == batch.batch_size + 2
    nt = batch.num_targets.tolist()
    s = sum(nt[:2])
    items = batch.sparse["tgt_item_id"].values()[s : s + nt[2]]
    cats = batch.sparse["tgt_category_id"].values()[s : s + nt[2]]
    whole = scorer.score(user, items, cats)
    parts = torch.cat(
        [scorer.score(user, items[:3], cats[:3]), scorer.score(user, items[3:], cats[3:])]
    )
    torch.testing.assert_close(whole, want[s : s + nt[2]], atol=1e-5, rtol=0)
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=0)


def test_byte_bound_evicts_states(tiny_data: Path, table) -> None:
    from longseq.data.collate import collate

    scorer = Scorer(build("stca_kv_padded", tiny_data))
    batch = collate(table, TASKS)
    sizes = [scorer.encode(batch, r).nbytes() for r in range(batch.batch_size)]
    assert all(n > 0 for n in sizes)
    scorer.cache = UserStateCache(max(sizes[0], sizes[1]) + min(sizes) - 1)  # room for ~1
    scorer.score_requests(batch, list(range(batch.batch_size)))
    st = scorer.cache.stats()
    assert st["bytes"] <= st["max_bytes"] and st["evictions"] >= batch.batch_size - 2
    last = int(batch.user_ids[-1]), batch.batch_size - 1
    assert last in scorer.cache and (int(batch.user_ids[0]), 0) not in scorer.cache


def test_make_request_equals_collated_row(tiny_data: Path, table) -> None:
    from longseq.data.collate import collate

    scorer = Scorer(build("stca_pairs_packed", tiny_data))
    row = table.slice(3, 1).to_pylist()[0]
    req = make_request(
        row["hist_item_id"], row["hist_category_id"], row["hist_action"], row["hist_ts"],
        row["request_ts"], row["tgt_item_id"], row["tgt_category_id"], window=20,
    )  # fmt: skip
    want = scorer.score_batch(collate(table.slice(3, 1), TASKS, [20]))
    torch.testing.assert_close(scorer.score_batch(req), want, atol=1e-6, rtol=0)
    user = scorer.encode(make_request(row["hist_item_id"], row["hist_category_id"],
                                      row["hist_action"], row["hist_ts"], row["request_ts"],
                                      window=20))  # fmt: skip
    got = scorer.score(user, row["tgt_item_id"], row["tgt_category_id"])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="same length"):
        make_request([1, 2], [1], [0, 0], [5, 6], 10)
    with pytest.raises(ValueError, match="window must be >= 1"):
        make_request([1], [1], [0], [5], 10, window=0)
