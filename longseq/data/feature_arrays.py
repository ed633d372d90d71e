"""Side features of a batch, as flat numpy arrays: what `longseq.data.collate.collate` puts
into a `RequestBatch` (sparse features into its KJT, dense ones into ``dense`` / ``tgt_dense``,
candidate list lengths into ``tgt_bags``). The declarations are `longseq.data.features`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from longseq.data.features import FeatureSpec


def list_parts(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(offsets relative to the values, values) of a list array (shared with
    `longseq.data.feature_checks`)."""
    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    off = a.offsets.to_numpy().astype(np.int64)
    return off - off[0], a.values.slice(int(off[0]), int(off[-1] - off[0]))


def to_numpy(a: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return a.to_numpy(zero_copy_only=False)


@dataclass
class FeatureArrays:
    """The feature inputs of a batch, flat numpy (collation builds the batch from them).

    Attributes:
        sparse: KJT key -> (values, per-row lengths) for each sparse feature, rows = the
            batch's rows (requests; targets in the pointwise layout).
        dense: ``[rows, n]`` float32 transformed request-level dense features.
        tgt_dense: ``[N, n]`` float32 transformed candidate dense features.
        tgt_bags: ``[N, n]`` int64 list lengths of the candidate ``multi_hot`` features.
    """

    sparse: dict[str, tuple[np.ndarray, np.ndarray]]
    dense: np.ndarray
    tgt_dense: np.ndarray
    tgt_bags: np.ndarray


def _gather_lists(off: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the lists ``rows`` (in that order) of offsets ``off``, and their lengths."""
    lens = np.diff(off)[rows]
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, np.int64), lens
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    return np.repeat(off[:-1][rows] - starts, lens) + np.arange(total, dtype=np.int64), lens


def feature_arrays(
    table: pa.Table,
    features: Sequence[FeatureSpec],
    row_req: np.ndarray,
    tgt_lengths: np.ndarray,
) -> FeatureArrays:
    """The features of ``table`` for a batch whose rows are the requests ``row_req`` (each once
    in request-level batching, once per target in the pointwise layout; ``tgt_lengths``: the
    targets of each batch row, in the table's target order)."""
    sparse: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    dense, tgt_dense, tgt_bags = [], [], []
    for f in features:
        col = table.column(f.column)
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if f.per_request:
            if f.kind == "dense":
                dense.append(f.transform_values(to_numpy(arr))[row_req])
            elif f.kind == "id":
                sparse[f.key] = (
                    to_numpy(arr).astype(np.int64)[row_req],
                    np.ones(len(row_req), np.int64),
                )
            else:
                off, vals = list_parts(arr)
                idx, lens = _gather_lists(off, row_req)
                sparse[f.key] = (to_numpy(vals).astype(np.int64)[idx], lens)
            continue
        _, vals = list_parts(arr)  # one value per target, in table order = batch order
        if f.kind == "dense":
            tgt_dense.append(f.transform_values(to_numpy(vals)))
        elif f.kind == "id":
            sparse[f.key] = (to_numpy(vals).astype(np.int64), tgt_lengths.astype(np.int64))
        else:
            boff, ids = list_parts(vals)
            bags = np.diff(boff)
            tgt_bags.append(bags)
            row_end = np.cumsum(tgt_lengths)
            per_row = np.diff(np.concatenate(([0], boff[row_end]))) if len(row_end) else bags[:0]
            sparse[f.key] = (to_numpy(ids).astype(np.int64), per_row.astype(np.int64))
    n_rows, n_tgt = len(row_req), int(np.sum(tgt_lengths))
    return FeatureArrays(
        sparse=sparse,
        dense=np.stack(dense, 1) if dense else np.zeros((n_rows, 0), np.float32),
        tgt_dense=np.stack(tgt_dense, 1) if tgt_dense else np.zeros((n_tgt, 0), np.float32),
        tgt_bags=np.stack(tgt_bags, 1).astype(np.int64)
        if tgt_bags
        else np.zeros((n_tgt, 0), np.int64),
    )
