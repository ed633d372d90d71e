"""Checks of the side-feature columns of request-level tables against their declarations
(`longseq.data.features.FeatureSpec`), shared by the reader and the validator
(`longseq.data.checks`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.data.feature_arrays import list_parts, to_numpy
from longseq.data.features import FeatureSpec


def feature_schema_problem(
    schema: pa.Schema, features: Sequence[FeatureSpec], source: str
) -> str | None:
    """A missing feature column or a column of the wrong type, or None."""
    for f in features:
        if f.column not in schema.names:
            return f"{source}: column {f.column!r}: missing column (feature declared in meta.json)"
        typ = schema.field(f.column).type
        if not f.accepts(typ):
            return f"{source}: column {f.column!r}: type {typ}, expected {f.expected_type()}"
    return None


def feature_problems(
    table: pa.Table, features: Sequence[FeatureSpec]
) -> list[tuple[int, str, str]]:
    """Every ``(row, column, problem)`` of the feature columns of a table whose schema passed
    `feature_schema_problem`: nulls, ids < 0 or >= ``cardinality``, NaN/inf dense values, a
    candidate list whose length differs from ``tgt_item_id``'s."""
    out: list[tuple[int, str, str]] = []
    n_tgt = pc.list_value_length(table.column("tgt_item_id")).fill_null(0)
    n_tgt = to_numpy(n_tgt)
    for f in features:
        col = table.column(f.column)
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if arr.null_count:
            out += [
                (int(r), f.column, "null value") for r in np.flatnonzero(to_numpy(arr.is_null()))
            ]
            continue
        # row_of: the request of each innermost value
        values: pa.Array = arr
        row_of = np.arange(table.num_rows)
        if not f.per_request:
            lens = to_numpy(pc.list_value_length(arr))
            for r in np.flatnonzero(lens != n_tgt):
                what = f"length {lens[r]} differs from 'tgt_item_id' length {n_tgt[r]}"
                out.append((int(r), f.column, what))
            off, values = list_parts(arr)
            row_of = np.repeat(row_of, np.diff(off))
        if f.kind == "multi_hot":
            if values.null_count:
                bad = np.unique(row_of[np.flatnonzero(to_numpy(values.is_null()))])
                out += [(int(r), f.column, "null list") for r in bad]
                continue
            off, values = list_parts(values)
            row_of = np.repeat(row_of, np.diff(off))
        if values.null_count:
            bad = np.unique(row_of[np.flatnonzero(to_numpy(values.is_null()))])
            out += [(int(r), f.column, "null element") for r in bad]
            continue
        v = to_numpy(values)
        if f.kind == "dense":
            checks = [(~np.isfinite(v), "NaN or inf value")]
        else:
            checks = [(v < 0, "negative id"),
                      (v >= f.cardinality, f"id >= cardinality {f.cardinality} (meta.json)")]  # fmt: skip
        for bad, what in checks:
            out += [(int(r), f.column, what) for r in np.unique(row_of[bad])]
    out.sort(key=lambda p: p[0])
    return out
