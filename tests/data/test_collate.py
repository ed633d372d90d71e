"""Collation: most-recent history windows, pointwise expansion, dt buckets, the KJT layout and the
errors, against brute-force Python on random Arrow tables."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longseq.data.batch import HISTORY_KEYS, TARGET_KEYS
from longseq.data.collate import NUM_DT_BUCKETS, collate, dt_buckets
from longseq.data.format import REQUEST_SCHEMA

HYP = settings(max_examples=40, deadline=None)


def _rows(hist_lens: list[int], n_tgt: list[int], seed: int) -> list[dict]:
    """Python rows in the request format (histories oldest -> newest, ts before request_ts)."""
    rng = np.random.default_rng(seed)
    rows = []
    for r, (h, t) in enumerate(zip(hist_lens, n_tgt)):
        req_ts = 1_700_000_000 + int(rng.integers(0, 10**6))
        gaps = rng.integers(0, 5000, h)
        ts = (req_ts - 1 - np.cumsum(gaps)[::-1]).tolist()  # non-decreasing, < req_ts
        rows.append(
            dict(
                request_id=1000 + r,
                user_id=int(rng.integers(0, 50)),
                request_ts=req_ts,
                hist_item_id=rng.integers(0, 10**6, h).tolist(),
                hist_category_id=rng.integers(0, 100, h).tolist(),
                hist_action=rng.integers(0, 4, h).tolist(),
                hist_ts=ts,
                tgt_item_id=rng.integers(0, 10**6, t).tolist(),
                tgt_category_id=rng.integers(0, 100, t).tolist(),
                tgt_click=rng.integers(0, 2, t).tolist(),
                tgt_p_true=rng.random(t).tolist(),
            )
        )
    return rows


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA)


def _bucket(dt: int) -> int:
    return min(NUM_DT_BUCKETS - 1, math.floor(2 * math.log2(1 + max(dt, 0))))


def _kept(row: dict, w: int | None) -> dict[str, list[int]]:
    """The brute-force served history: the last ``w`` events (all when ``w`` is None)."""
    n = len(row["hist_item_id"])
    k = n if w is None else min(n, w)
    sl = slice(n - k, n)
    return {
        "hist_item_id": row["hist_item_id"][sl],
        "hist_category_id": row["hist_category_id"][sl],
        "hist_action": row["hist_action"][sl],
        "hist_dt_bucket": [_bucket(row["request_ts"] - ts) for ts in row["hist_ts"][sl]],
    }


def _split(batch, key: str) -> list[list[int]]:
    jt = batch.sparse[key]
    vals, lens = jt.values().tolist(), jt.lengths().tolist()
    offs = np.concatenate(([0], np.cumsum(lens))).astype(int)
    return [vals[a:b] for a, b in zip(offs[:-1], offs[1:])]


shapes = st.lists(
    st.tuples(st.integers(0, 12), st.integers(1, 4), st.integers(0, 16)), min_size=1, max_size=6
)  # (history length, targets, window) per request


@HYP
@given(shapes=shapes, use_windows=st.booleans(), seed=st.integers(0, 10**6))
def test_windows_keep_exactly_the_most_recent_events(shapes, use_windows, seed):
    rows = _rows([s[0] for s in shapes], [s[1] for s in shapes], seed)
    windows = np.array([s[2] for s in shapes]) if use_windows else None
    b = collate(_table(rows), ["click"], windows)
    assert b.batch_size == len(rows)
    wins = [None] * len(rows) if windows is None else [int(w) for w in windows]
    for key in HISTORY_KEYS:
        assert _split(b, key) == [_kept(r, w)[key] for r, w in zip(rows, wins)], key
    assert _split(b, "tgt_item_id") == [r["tgt_item_id"] for r in rows]
    assert _split(b, "tgt_category_id") == [r["tgt_category_id"] for r in rows]
    assert b.num_targets.tolist() == [len(r["tgt_item_id"]) for r in rows]
    assert b.labels.shape == (sum(len(r["tgt_click"]) for r in rows), 1)
    assert b.labels[:, 0].tolist() == [float(x) for r in rows for x in r["tgt_click"]]
    assert b.request_ids.tolist() == [r["request_id"] for r in rows]
    assert b.user_ids.tolist() == [r["user_id"] for r in rows]
    assert b.dense.shape == (len(rows), 0)


@HYP
@given(shapes=shapes, seed=st.integers(0, 10**6))
def test_pointwise_expansion(shapes, seed):
    rows = _rows([s[0] for s in shapes], [s[1] for s in shapes], seed)
    windows = np.array([s[2] for s in shapes])
    table = _table(rows)
    rlb = collate(table, ["click"], windows)
    pw = collate(table, ["click"], windows, pointwise=True)
    n = sum(len(r["tgt_item_id"]) for r in rows)
    assert pw.batch_size == n == int(rlb.num_targets.sum())
    assert pw.num_targets.tolist() == [1] * n
    assert pw.sparse.stride() == n
    req_of_row = [i for i, r in enumerate(rows) for _ in r["tgt_item_id"]]
    assert pw.request_ids.tolist() == [rows[i]["request_id"] for i in req_of_row]
    assert pw.user_ids.tolist() == [rows[i]["user_id"] for i in req_of_row]
    rlb_hist = {k: _split(rlb, k) for k in HISTORY_KEYS}
    for key in HISTORY_KEYS:  # each target row repeats its request's (windowed) history
        assert _split(pw, key) == [rlb_hist[key][i] for i in req_of_row], key
    flat = [[x] for r in rows for x in r["tgt_item_id"]]
    assert _split(pw, "tgt_item_id") == flat
    assert pw.labels.tolist() == rlb.labels.tolist()  # same targets, same order


@pytest.mark.parametrize("pointwise", [False, True])
def test_sliced_and_chunked_tables_collate_like_fresh_ones(pointwise):
    """The reader hands over slices of concatenated tables (non-zero list offsets, several
    chunks); collation must read the rows, not the underlying buffers."""
    rows = _rows([3, 0, 5, 2, 7, 1], [2, 1, 3, 1, 2, 2], seed=3)
    chunked = pa.concat_tables([_table(rows[:2]), _table(rows[2:4]), _table(rows[4:])])
    sliced = chunked.slice(1, 4)
    wins = np.array([2, 9, 0, 4])
    a = collate(sliced, ["click"], wins, pointwise=pointwise)
    b = collate(_table(rows[1:5]), ["click"], wins, pointwise=pointwise)
    for key in HISTORY_KEYS + TARGET_KEYS:
        assert _split(a, key) == _split(b, key), key
    assert a.labels.tolist() == b.labels.tolist()
    assert a.request_ids.tolist() == [1001, 1002, 1003, 1004] or pointwise
    assert a.request_ids.tolist() == b.request_ids.tolist()


def test_kjt_keys_lengths_and_stride():
    rows = _rows([4, 0, 2], [3, 1, 2], seed=1)
    b = collate(_table(rows), ["click"], np.array([3, 5, 0]))
    kjt = b.sparse
    assert kjt.keys() == list(HISTORY_KEYS + TARGET_KEYS)
    assert kjt.stride() == 3
    lengths = kjt.lengths().view(len(kjt.keys()), 3).tolist()
    assert lengths == [[3, 0, 0]] * 4 + [[3, 1, 2]] * 2
    assert kjt.values().numel() == 4 * 3 + 2 * 6
    assert b.history_lengths().tolist() == [3, 0, 0]
    pw = collate(_table(rows), ["click"], np.array([3, 5, 0]), pointwise=True)
    assert pw.sparse.stride() == 6
    pw_len = pw.sparse.lengths().view(6, 6).tolist()
    assert pw_len == [[3, 3, 3, 0, 0, 0]] * 4 + [[1] * 6] * 2


def test_dt_buckets_monotone_and_bounded():
    dt = np.array([-(10**9), -5, 0, 1, 2, 3, 7, 60, 3600, 86400, 10**7, 10**12, 2**62])
    got = dt_buckets(dt)
    assert got.dtype == np.int64
    assert got.tolist() == [_bucket(int(x)) for x in dt]
    assert (np.diff(got) >= 0).all()
    assert got.min() == 0 and got.max() == NUM_DT_BUCKETS - 1
    assert got[:3].tolist() == [0, 0, 0]  # future or simultaneous events clamp to bucket 0
    assert got[3:6].tolist() == [2, 3, 4]  # floor(2 log2(1 + dt))
    dense = dt_buckets(np.arange(-100, 10**6))
    assert (np.diff(dense) >= 0).all()


def test_request_without_targets_names_the_request():
    rows = _rows([2, 3, 1], [1, 2, 1], seed=0)
    for k in ("tgt_item_id", "tgt_category_id", "tgt_click", "tgt_p_true"):
        rows[1][k] = []
    with pytest.raises(ValueError, match=r"request_id \[1001\]"):
        collate(_table(rows), ["click"])


def test_missing_label_column_names_the_column():
    table = _table(_rows([2, 3], [1, 2], seed=0))
    with pytest.raises(KeyError, match="tgt_like"):
        collate(table, ["click", "like"])
    extra = table.append_column("tgt_like", table.column("tgt_click"))
    b = collate(extra, ["like", "click"])
    assert b.labels.shape == (3, 2)


def test_no_tasks_gives_an_empty_label_matrix():
    b = collate(_table(_rows([2, 3], [1, 2], seed=0)), [])
    assert b.labels.shape == (3, 0)
