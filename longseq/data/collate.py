"""Collation of request rows (Arrow) into a `RequestBatch`, request-level or pointwise.

Vectorized over the batch: Arrow list columns are flattened once and the kept (most recent)
history events are gathered with one index array, so a 10k-event history costs no Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from longseq.data.batch import HISTORY_KEYS, NUM_DT_BUCKETS, TARGET_KEYS, RequestBatch
from longseq.data.feature_arrays import feature_arrays
from longseq.data.features import FeatureSpec


def dt_buckets(dt_seconds: np.ndarray) -> np.ndarray:
    """Log-bucketed time delta: ``min(63, floor(2 * log2(1 + max(dt, 0))))``."""
    dt = np.maximum(dt_seconds.astype(np.float64), 0.0)
    return np.minimum(NUM_DT_BUCKETS - 1, np.floor(2.0 * np.log2(1.0 + dt))).astype(np.int64)


def _list_parts(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets[n+1], flat values) of an Arrow list column."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)
    base = offsets[0]
    return offsets - base, values[base : offsets[-1]]


def _suffix_index(ends: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Flat indices of the ``keep[r]`` elements that end (exclusively) at ``ends[r]``."""
    total = int(keep.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    out_start = np.concatenate(([0], np.cumsum(keep)[:-1]))
    return np.repeat(ends - keep - out_start, keep) + np.arange(total, dtype=np.int64)


def _prefix_index(starts: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Flat indices of the first ``keep[r]`` elements that start at ``starts[r]``."""
    total = int(keep.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    out_start = np.concatenate(([0], np.cumsum(keep)[:-1]))
    return np.repeat(starts - out_start, keep) + np.arange(total, dtype=np.int64)


def cut_histories(table: pa.Table, max_len: int) -> tuple[pa.Table, int]:
    """Keep at most the ``max_len`` most recent events of every history list column
    (``HIST_COLUMNS``); returns the table and the number of requests that were cut."""
    from longseq.data.format import HIST_COLUMNS

    return _cut_lists(table, "hist_item_id", list(HIST_COLUMNS), max_len, newest=True)


def cut_targets(table: pa.Table, max_len: int) -> tuple[pa.Table, int]:
    """Keep the first ``max_len`` targets of every request: every ``tgt_*`` list column (ids,
    labels, extra per-target columns) alike; returns the table and the number of requests cut."""
    lists = (pa.types.is_list, pa.types.is_large_list)
    names = [f.name for f in table.schema if f.name.startswith("tgt_") and _any(lists, f.type)]
    return _cut_lists(table, "tgt_item_id", names, max_len, newest=False)


def _any(tests: tuple, value: object) -> bool:
    return any(test(value) for test in tests)


def _cut_lists(
    table: pa.Table, length_col: str, names: list[str], max_len: int, newest: bool
) -> tuple[pa.Table, int]:
    """Keep at most ``max_len`` elements of each parallel list column ``names``: the last ones
    (``newest``) or the first ones; rows are counted as cut by ``length_col``'s lengths."""
    lens = pa.compute.list_value_length(table.column(length_col)).to_numpy(False)
    n_cut = int((lens > max_len).sum())
    if max_len <= 0 or n_cut == 0:
        return table, 0
    for name in names:
        col = table.column(name)
        whole = col.combine_chunks()
        base = int(whole.offsets[0].as_py())
        off = whole.offsets.to_numpy().astype(np.int64) - base
        keep = np.minimum(np.diff(off), max_len)
        idx = _suffix_index(off[1:], keep) if newest else _prefix_index(off[:-1], keep)
        wide = pa.types.is_large_list(col.type)
        new_off = np.concatenate(([0], np.cumsum(keep))).astype(np.int64 if wide else np.int32)
        cls = pa.LargeListArray if wide else pa.ListArray
        vals = whole.values.take(pa.array(idx + base))  # Arrow take: nested lists (multi-hot) too
        arr = cls.from_arrays(pa.array(new_off), vals, type=col.type)
        table = table.set_column(table.schema.get_field_index(name), name, arr)
    return table, n_cut


def collate(
    table: pa.Table,
    tasks: list[str],
    windows: np.ndarray | None = None,
    pointwise: bool = False,
    features: Sequence[FeatureSpec] = (),
) -> RequestBatch:
    """Turn request rows into a `RequestBatch`.

    Args:
        table: rows in the request-level format (docs/data-format.md).
        tasks: label tasks; column ``tgt_<task>`` holds each one.
        windows: per-row number of most recent history events to keep (``None``: all).
        pointwise: emit one row per target with the history repeated (the baseline layout);
            the result is the same type with ``num_targets == 1`` everywhere.
        features: the declared side features to read (``meta.json``'s ``features``): sparse
            ones join the KJT after the sequence keys, in declaration order; dense ones fill
            ``dense`` / ``tgt_dense`` (transformed). A user/context feature is repeated per
            row in the pointwise layout, as the history is.
    """
    n = table.num_rows
    h_off, h_item = _list_parts(table.column("hist_item_id"))
    h_len = np.diff(h_off)
    keep = h_len if windows is None else np.minimum(h_len, np.asarray(windows, dtype=np.int64))
    t_off, t_item = _list_parts(table.column("tgt_item_id"))
    t_len = np.diff(t_off)
    if np.any(t_len == 0):
        bad = table.column("request_id").to_numpy()[t_len == 0][:5]
        raise ValueError(f"requests without targets (request_id {bad.tolist()})")

    hist_cols = {
        "hist_item_id": h_item,
        "hist_category_id": _list_parts(table.column("hist_category_id"))[1],
        "hist_action": _list_parts(table.column("hist_action"))[1],
    }
    hist_ts = _list_parts(table.column("hist_ts"))[1]
    req_ts = table.column("request_ts").to_numpy()
    row_of_event = np.repeat(np.arange(n), h_len)
    hist_cols["hist_dt_bucket"] = dt_buckets(req_ts[row_of_event] - hist_ts)

    if pointwise:
        row_req = np.repeat(np.arange(n), t_len)  # one row per target
        tgt_idx = np.arange(int(t_len.sum()), dtype=np.int64)
        tgt_lengths = np.ones(len(row_req), dtype=np.int64)
    else:
        row_req = np.arange(n)
        tgt_idx = np.arange(int(t_len.sum()), dtype=np.int64)
        tgt_lengths = t_len
    # history rows: the kept suffix of each row's request, repeated per row in pointwise mode
    ends = h_off[1:][row_req]
    r_keep = keep[row_req]
    hist_idx = _suffix_index(ends, r_keep)

    values, lengths = [], []
    for key in HISTORY_KEYS:
        values.append(hist_cols[key][hist_idx])
        lengths.append(r_keep)
    tgt_cat = _list_parts(table.column("tgt_category_id"))[1]
    for _key, vals in zip(TARGET_KEYS, (t_item, tgt_cat), strict=True):
        values.append(vals[tgt_idx])
        lengths.append(tgt_lengths)

    labels = []
    for task in tasks:
        col = f"tgt_{task}"
        if col not in table.column_names:
            raise KeyError(f"label column {col!r} missing (tasks={tasks})")
        labels.append(_list_parts(table.column(col))[1].astype(np.float32))
    label_mat = np.stack(labels, axis=1) if labels else np.zeros((len(tgt_idx), 0), np.float32)

    feats = feature_arrays(table, features, row_req, tgt_lengths)
    for vals, lens in feats.sparse.values():
        values.append(vals)
        lengths.append(lens)
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=list(HISTORY_KEYS + TARGET_KEYS) + list(feats.sparse),
        values=torch.from_numpy(np.concatenate(values).astype(np.int64)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int64)),
    )
    return RequestBatch(
        sparse=kjt,
        num_targets=torch.from_numpy(tgt_lengths.astype(np.int64)),
        labels=torch.from_numpy(label_mat),
        request_ids=torch.from_numpy(
            table.column("request_id").to_numpy()[row_req].astype(np.int64)
        ),
        user_ids=torch.from_numpy(table.column("user_id").to_numpy()[row_req].astype(np.int64)),
        dense=torch.from_numpy(feats.dense),
        tgt_dense=torch.from_numpy(feats.tgt_dense),
        tgt_bags=torch.from_numpy(feats.tgt_bags),
    )
