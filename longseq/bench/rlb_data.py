"""Synthetic request tables and byte counts for the ``rlb`` suite (pyarrow + numpy only).

`request_table` builds rows in the request-level format (`longseq.data.format.REQUEST_SCHEMA`);
`pointwise_table` repeats each request once per target (the layout without request-level
batching). `parquet_bytes` writes a table to a temporary file and returns its size.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longseq.data.format import REQUEST_SCHEMA

#: Vocabulary of the synthetic tables (the ``ci`` preset's order of magnitude).
VOCAB = {"num_items": 20_000, "num_categories": 200, "num_actions": 4}


def request_table(requests: int, targets: int, length: int, seed: int = 0) -> pa.Table:
    """``requests`` rows with a ``length``-event history and ``targets`` targets each."""
    rng = np.random.default_rng(seed)
    n_ev, n_tg = requests * length, requests * targets
    req_ts = 1_700_000_000 + rng.integers(0, 86_400, requests)
    gaps = 1 + rng.exponential(600.0, n_ev).astype(np.int64)
    # per row: oldest first, strictly before the request time
    back = np.cumsum(gaps.reshape(requests, length)[:, ::-1], axis=1)[:, ::-1]
    hist_ts = (req_ts[:, None] - back).reshape(-1)
    cat = rng.integers(0, VOCAB["num_categories"], n_ev)
    items_per_cat = VOCAB["num_items"] // VOCAB["num_categories"]
    item = cat * items_per_cat + rng.integers(0, items_per_cat, n_ev)
    tcat = rng.integers(0, VOCAB["num_categories"], n_tg)
    titem = tcat * items_per_cat + rng.integers(0, items_per_cat, n_tg)
    hoff = pa.array(np.arange(requests + 1, dtype=np.int32) * length)
    toff = pa.array(np.arange(requests + 1, dtype=np.int32) * targets)

    def lst(off: pa.Array, values: np.ndarray, typ: pa.DataType) -> pa.ListArray:
        return pa.ListArray.from_arrays(off, pa.array(values, typ))

    i64 = pa.int64()
    cols = [
        pa.array(np.arange(requests), i64), pa.array(np.arange(requests) + 10**6, i64),
        pa.array(req_ts, i64),
        lst(hoff, item, i64), lst(hoff, cat, i64),
        lst(hoff, rng.integers(0, VOCAB["num_actions"], n_ev), i64), lst(hoff, hist_ts, i64),
        lst(toff, titem, i64), lst(toff, tcat, i64),
        lst(toff, (rng.random(n_tg) < 0.1).astype(np.int8), pa.int8()),
        lst(toff, rng.random(n_tg), pa.float64()),
    ]  # fmt: skip
    return pa.Table.from_arrays(cols, schema=REQUEST_SCHEMA)


def pointwise_table(table: pa.Table, target_major: bool = False) -> pa.Table:
    """One row per target, the request's history repeated in each.

    Rows are request-major (a request's copies adjacent) or, with ``target_major``, every
    request's first target, then every request's second, ... (copies ``requests`` rows apart).
    """
    t_len = np.diff(table.column("tgt_item_id").combine_chunks().offsets.to_numpy())
    rows = np.repeat(np.arange(table.num_rows), t_len)
    out = table.take(pa.array(rows))
    one = pa.array(np.arange(len(rows) + 1, dtype=np.int32))
    for name in [n for n in table.column_names if n.startswith("tgt_")]:
        flat = table.column(name).combine_chunks().flatten()
        idx = out.schema.get_field_index(name)
        out = out.set_column(idx, name, pa.ListArray.from_arrays(one, flat))
    if target_major:
        rank = np.arange(len(rows)) - np.repeat(np.cumsum(t_len) - t_len, t_len)
        out = out.take(pa.array(np.lexsort((rows, rank))))
    return out


def parquet_bytes(table: pa.Table, compression: str | None, row_group_size: int = 256) -> int:
    """Size of ``table`` written as one Parquet file (``compression=None``: plain, no
    dictionary: the raw bytes; ``zstd`` + dictionary: what `SplitWriter` writes)."""
    with tempfile.TemporaryDirectory(prefix="longseq-bench-") as tmp:
        path = Path(tmp) / "t.parquet"
        pq.write_table(
            table,
            path,
            compression=compression or "none",
            use_dictionary=compression is not None,
            row_group_size=row_group_size,
        )
        return path.stat().st_size


def stored_bytes(requests: int, targets: int, length: int, seed: int = 0) -> dict[str, Any]:
    """Stored bytes per target of the request-level and pointwise layouts.

    ``plain``: no compression, no dictionary (the raw layout). ``zstd``: dictionary + zstd, with
    the pointwise copies of a history adjacent in one row group (the best case for compression)
    and ``dispersed`` (each row group of ``requests`` rows holds one copy of each history, as in
    a shuffled pointwise data set much larger than a row group, where copies never meet).
    """
    rl = request_table(requests, targets, length, seed)
    pw = pointwise_table(rl)
    n = requests * targets
    out: dict[str, Any] = {"requests": requests, "targets": targets, "length": length}
    for comp in (None, "zstd"):
        tag = comp or "plain"
        rl_b, pw_b = parquet_bytes(rl, comp), parquet_bytes(pw, comp)
        out[f"{tag}_rlb_per_target"] = rl_b / n
        out[f"{tag}_pointwise_per_target"] = pw_b / n
        out[f"{tag}_ratio"] = rl_b / pw_b
    dispersed = parquet_bytes(pointwise_table(rl, target_major=True), "zstd", requests)
    out["zstd_pointwise_dispersed_per_target"] = dispersed / n
    out["zstd_ratio_dispersed"] = out["zstd_rlb_per_target"] * n / dispersed
    return out


def batch_bytes(batch: Any) -> dict[str, int]:
    """Host-to-device bytes of a `RequestBatch` (every tensor ``.to(device)`` moves) and ids."""
    kjt = batch.sparse
    parts = {
        "kjt_values": kjt.values().nbytes,
        "kjt_lengths": kjt.lengths().nbytes,
        "num_targets": batch.num_targets.nbytes,
        "labels": batch.labels.nbytes,
        "request_ids": batch.request_ids.nbytes,
        "user_ids": batch.user_ids.nbytes,
        "dense": batch.dense.nbytes,
        "tgt_dense": batch.tgt_dense.nbytes,
        "tgt_bags": batch.tgt_bags.nbytes,
    }
    if kjt.weights_or_none() is not None:
        parts["kjt_weights"] = kjt.weights().nbytes
    return {**parts, "total": sum(parts.values()), "ids": kjt.values().numel()}
