"""Row and schema checks of request-level Parquet data, shared by the reader and the validator.

The runtime reader (`longseq.data.reader`, with ``data.on_bad_row``) and the offline validator
(``python -m longseq.datasets.validate``) apply the same checks: the row-level rules of
:func:`longseq.data.format.validate_table`, vectorized so that every problem can be counted, plus id
ranges against the data set's ``meta.json``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.data.feature_checks import feature_problems, feature_schema_problem
from longseq.data.features import FeatureSpec
from longseq.data.format import (
    CORE_TYPES,
    HIST_COLUMNS,
    TGT_ID_COLUMNS,
    task_names,
    validate_table,
)
from longseq.data.meta import DatasetMeta

#: Id columns checked against ``meta.json`` (column -> meta key of the vocabulary size).
ID_LIMIT_KEYS: dict[str, str] = {
    "hist_item_id": "num_items",
    "tgt_item_id": "num_items",
    "hist_category_id": "num_categories",
    "tgt_category_id": "num_categories",
    "hist_action": "num_actions",
}


def id_limits(meta: DatasetMeta | None) -> dict[str, int]:
    """Exclusive upper bounds per id column from ``meta.json`` (no meta: none)."""
    return {c: meta.id_limit(k) for c, k in ID_LIMIT_KEYS.items()} if meta is not None else {}


def _offsets_values(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    off = arr.offsets.to_numpy().astype(np.int64)
    return off - off[0], arr.values.to_numpy(zero_copy_only=False)[off[0] : off[-1]]


def _rows(off: np.ndarray, bad_values: np.ndarray) -> np.ndarray:
    """Rows (sorted, unique) holding at least one flagged element."""
    row_of = np.repeat(np.arange(off.size - 1), np.diff(off))
    return np.unique(row_of[bad_values])


def list_lengths(col: pa.ChunkedArray) -> np.ndarray:
    return pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)


def row_problems(
    table: pa.Table, limits: dict[str, int], features: Sequence[FeatureSpec] = ()
) -> list[tuple[int, str, str]]:
    """Every ``(row, column, problem)`` of a table whose schema is valid, sorted by row.

    The row-level checks of ``validate_table`` plus the id ranges and the declared
    ``features`` (`longseq.data.feature_checks.feature_problems`), vectorized, so that all problems
    can be counted (``validate_table`` stops at the first).
    """
    out = format_problems(table) + id_problems(table, limits) + feature_problems(table, features)
    out.sort(key=lambda p: p[0])
    return out


def format_problems(table: pa.Table) -> list[tuple[int, str, str]]:
    """The row-level problems ``validate_table`` checks, all of them: ``(row, column, what)``."""
    out: list[tuple[int, str, str]] = []

    def add(rows: np.ndarray, column: str, what: str) -> None:
        out.extend((int(r), column, what) for r in rows)

    tasks = task_names(table.schema)
    tgt = [*TGT_ID_COLUMNS, *(f"tgt_{t}" for t in tasks)]
    tgt += ["tgt_p_true"] if "tgt_p_true" in table.column_names else []
    for name in dict.fromkeys([*CORE_TYPES, *tgt]):
        col = table.column(name)
        if col.null_count:
            add(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)), name, "null value")
        if pa.types.is_list(col.type) and pc.list_flatten(col).null_count:
            parents = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
            nulls = pc.list_flatten(col).is_null().to_numpy(zero_copy_only=False)
            add(np.unique(parents[nulls]), name, "null element")
    for group in (HIST_COLUMNS, tgt):
        ref = list_lengths(table.column(group[0]))
        for name in group[1:]:
            lens = list_lengths(table.column(name))
            for r in np.flatnonzero(lens != ref):
                what = f"length {lens[r]} differs from {group[0]!r} length {ref[r]}"
                out.append((int(r), name, what))
    hoff, hts = _offsets_values(table.column("hist_ts"))
    row_of = np.repeat(np.arange(table.num_rows), np.diff(hoff))
    req = table.column("request_ts").fill_null(0).to_numpy(zero_copy_only=False)
    add(np.unique(row_of[hts >= req[row_of]]), "hist_ts", "event timestamp >= request_ts")
    dec = (row_of[1:] == row_of[:-1]) & (np.diff(hts) < 0)
    add(np.unique(row_of[1:][dec]), "hist_ts", "history not sorted oldest to newest")
    add(
        np.flatnonzero(list_lengths(table.column("tgt_item_id")) == 0),
        "tgt_item_id",
        "empty target list",
    )
    for task in tasks:
        off, lab = _offsets_values(table.column(f"tgt_{task}"))
        add(_rows(off, (lab != 0) & (lab != 1)), f"tgt_{task}", "label not in {0, 1}")
    return out


def id_problems(table: pa.Table, limits: dict[str, int]) -> list[tuple[int, str, str]]:
    """Ids < 0, or >= the ``meta.json`` vocabulary size in ``limits``: ``(row, column, what)``."""
    out: list[tuple[int, str, str]] = []
    for name in ID_LIMIT_KEYS:
        off, ids = _offsets_values(table.column(name))
        checks = [(ids < 0, "negative id")]
        if name in limits:
            lim = limits[name]
            checks.append((ids >= lim, f"id >= {ID_LIMIT_KEYS[name]}={lim} (meta.json)"))
        for bad, what in checks:
            out.extend((int(r), name, what) for r in _rows(off, bad))
    out.sort(key=lambda p: p[0])
    return out


def problem_message(source: str, table: pa.Table, row: int, column: str, what: str) -> str:
    rid = table.column("request_id")[row].as_py()
    return f"{source}: column {column!r}, row {row} (request_id={rid}): {what}"


def schema_problem(
    schema: pa.Schema, source: str, tasks: list[str], features: Sequence[FeatureSpec] = ()
) -> str | None:
    """The file-level problem of ``schema`` (missing column, wrong type, a declared feature's
    column missing or of the wrong type), or None."""
    try:
        validate_table(schema.empty_table(), source)
    except ValueError as e:
        return str(e)
    missing = [t for t in tasks if f"tgt_{t}" not in schema.names]
    if missing:
        return f"{source}: column 'tgt_{missing[0]}': missing column (task listed in meta.json)"
    return feature_schema_problem(schema, features, source)
