"""The request-level Parquet format: one row per (user, request), the history stored once.

Columns (see ``docs/data-format.md``):

- ``request_id``, ``user_id``, ``request_ts`` (int64; ``request_ts`` in seconds);
- the history as parallel ``list<int64>`` columns ``hist_item_id``, ``hist_category_id``,
  ``hist_action``, ``hist_ts``, oldest to newest, every ``hist_ts`` strictly before
  ``request_ts`` and non-decreasing;
- the targets as parallel lists ``tgt_item_id``, ``tgt_category_id`` (``list<int64>``), one
  label list per task ``tgt_<task>`` (``list<int8>``, values 0/1; the synthetic data has one task,
  ``click``) and, for synthetic data, ``tgt_p_true`` (``list<float64>``, never a model input).

Feature columns (``feat_<name>``, ``tgt_feat_<name>``) are read when ``meta.json`` declares them
(`longseq.data.features`); other extra columns are allowed and ignored; missing core columns are
errors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HIST_COLUMNS: tuple[str, ...] = ("hist_item_id", "hist_category_id", "hist_action", "hist_ts")
TGT_ID_COLUMNS: tuple[str, ...] = ("tgt_item_id", "tgt_category_id")
#: ``tgt_*`` columns that are not task labels.
TGT_NON_LABEL: frozenset[str] = frozenset({*TGT_ID_COLUMNS, "tgt_p_true", "tgt_is_sampled"})
LABEL_TYPE: pa.DataType = pa.list_(pa.int8())

_I64, _L64 = pa.int64(), pa.list_(pa.int64())

#: Schema of the synthetic data (one task, ``click``). Real data may carry other tasks/columns.
REQUEST_SCHEMA: pa.Schema = pa.schema(
    [
        ("request_id", _I64),
        ("user_id", _I64),
        ("request_ts", _I64),
        *[(c, _L64) for c in HIST_COLUMNS],
        *[(c, _L64) for c in TGT_ID_COLUMNS],
        ("tgt_click", LABEL_TYPE),
        ("tgt_p_true", pa.list_(pa.float64())),
    ]
)

#: Columns every request-level file must have, with their types (labels are checked apart).
CORE_TYPES: dict[str, pa.DataType] = {
    f.name: f.type for f in REQUEST_SCHEMA if f.name not in ("tgt_click", "tgt_p_true")
}


def task_names(schema: pa.Schema) -> list[str]:
    """Task names from the ``tgt_<task>`` label columns of ``schema`` (in schema order; the
    candidate feature columns ``tgt_feat_*`` are not tasks)."""
    return [
        n[len("tgt_") :]
        for n in schema.names
        if n.startswith("tgt_") and n not in TGT_NON_LABEL and not n.startswith("tgt_feat_")
    ]


def _fail(source: str, table: pa.Table, row: int | None, column: str, what: str) -> ValueError:
    where = f"{source}: column {column!r}"
    if row is not None:
        rid = (
            table.column("request_id")[row].as_py() if "request_id" in table.column_names else None
        )
        where += f", row {row} (request_id={rid})"
    return ValueError(f"{where}: {what}")


def _first(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def _flat(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, values) of a list column, with offsets relative to the values."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]]
    return offsets - offsets[0], values


def validate_table(table: pa.Table, source: str = "<table>") -> None:
    """Check a request-level table; raise ``ValueError`` naming source, row/request_id and column.

    Checks: core columns present with their types, label columns ``list<int8>`` with values in
    {0, 1}, no nulls, parallel lists of equal length, history sorted oldest to newest with every
    ``hist_ts < request_ts``, and at least one target per request.
    """
    for name, typ in CORE_TYPES.items():
        if name not in table.column_names:
            raise _fail(source, table, None, name, "missing column")
        if table.schema.field(name).type != typ:
            raise _fail(
                source, table, None, name, f"type {table.schema.field(name).type}, expected {typ}"
            )
    tasks = task_names(table.schema)
    if not tasks:
        raise _fail(source, table, None, "tgt_<task>", "no label column")
    tgt_cols = [*TGT_ID_COLUMNS, *(f"tgt_{t}" for t in tasks)]
    for name in tgt_cols[2:]:
        if table.schema.field(name).type != LABEL_TYPE:
            typ = table.schema.field(name).type
            raise _fail(source, table, None, name, f"type {typ}, expected {LABEL_TYPE}")
    if "tgt_p_true" in table.column_names:
        if table.schema.field("tgt_p_true").type != pa.list_(pa.float64()):
            raise _fail(source, table, None, "tgt_p_true", "expected list<double>")
        tgt_cols.append("tgt_p_true")
    if "tgt_is_sampled" in table.column_names:
        if table.schema.field("tgt_is_sampled").type != LABEL_TYPE:
            raise _fail(source, table, None, "tgt_is_sampled", f"expected {LABEL_TYPE}")
        tgt_cols.append("tgt_is_sampled")
    for name in [*CORE_TYPES, *tgt_cols]:
        col = table.column(name)
        if col.null_count:
            raise _fail(source, table, _first(col.is_null().to_numpy(False)), name, "null value")
        if pa.types.is_list(col.type):
            values = pc.list_flatten(col)
            if values.null_count:
                parents = pc.list_parent_indices(col).to_numpy(False)
                row = int(parents[_first(values.is_null().to_numpy(False))])
                raise _fail(source, table, row, name, "null element")
    _check_parallel(table, source, HIST_COLUMNS)
    _check_parallel(table, source, tgt_cols)

    hoff, hts = _flat(table.column("hist_ts"))
    req_ts = table.column("request_ts").to_numpy()
    row_of_event = np.repeat(np.arange(table.num_rows), np.diff(hoff))
    bad = hts >= req_ts[row_of_event]
    if bad.any():
        r = int(row_of_event[_first(bad)])
        raise _fail(source, table, r, "hist_ts", "event timestamp >= request_ts")
    if hts.size > 1:
        same_row = row_of_event[1:] == row_of_event[:-1]
        dec = same_row & (np.diff(hts) < 0)
        if dec.any():
            r = int(row_of_event[1:][_first(dec)])
            raise _fail(source, table, r, "hist_ts", "history not sorted oldest to newest")
    toff, _ = _flat(table.column("tgt_item_id"))
    empty = _first(np.diff(toff) == 0)
    if empty is not None:
        raise _fail(source, table, empty, "tgt_item_id", "empty target list")
    for task in tasks:
        off, lab = _flat(table.column(f"tgt_{task}"))
        bad = (lab != 0) & (lab != 1)
        if bad.any():
            r = int(np.searchsorted(off, _first(bad), side="right") - 1)
            raise _fail(source, table, r, f"tgt_{task}", "label not in {0, 1}")


def _check_parallel(table: pa.Table, source: str, cols: list[str] | tuple[str, ...]) -> None:
    ref = pc.list_value_length(table.column(cols[0])).to_numpy(False)
    for name in cols[1:]:
        lens = pc.list_value_length(table.column(name)).to_numpy(False)
        bad = _first(lens != ref)
        if bad is not None:
            what = f"length {lens[bad]} differs from {cols[0]!r} length {ref[bad]}"
            raise _fail(source, table, bad, name, what)


def dataset_files(path: str | Path) -> list[Path]:
    """The Parquet files of ``path`` (a file, or a folder searched recursively), sorted."""
    p = Path(path)
    if p.is_file():
        return [p]
    files = sorted(p.rglob("*.parquet"))
    if not files:
        raise ValueError(f"{p}: no .parquet files")
    return files


def validate_dataset(path: str | Path) -> int:
    """Validate every row group of every Parquet file under ``path``; return the row count.

    Errors name the file and row group as well as the row and column.
    """
    total = 0
    for f in dataset_files(path):
        pf = pq.ParquetFile(f)
        for g in range(pf.num_row_groups):
            validate_table(pf.read_row_group(g), f"{f} (row group {g})")
            total += pf.metadata.row_group(g).num_rows
    return total
