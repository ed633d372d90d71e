"""The request-level schema and its validation: every bad input names file, row and column."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from longseq.data.format import (
    CORE_TYPES,
    REQUEST_SCHEMA,
    task_names,
    validate_dataset,
    validate_table,
)
from longseq.data.writer import SplitWriter


def make_rows(n: int, seed: int = 0, min_hist: int = 0) -> list[dict]:
    """``n`` valid request rows (request_id = 100 + row index)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        L, T = int(rng.integers(min_hist, 7)), int(rng.integers(1, 4))
        req_ts = 1_000_000 + int(rng.integers(0, 1000))
        ts = sorted(req_ts - 1 - rng.choice(500, size=L, replace=False))
        rows.append(
            {
                "request_id": 100 + i, "user_id": 7 * i, "request_ts": req_ts,
                "hist_item_id": rng.integers(0, 50, L).tolist(),
                "hist_category_id": rng.integers(0, 5, L).tolist(),
                "hist_action": rng.integers(0, 3, L).tolist(),
                "hist_ts": [int(t) for t in ts],
                "tgt_item_id": rng.integers(0, 50, T).tolist(),
                "tgt_category_id": rng.integers(0, 5, T).tolist(),
                "tgt_click": rng.integers(0, 2, T).tolist(),
                "tgt_p_true": rng.random(T).tolist(),
            }
        )  # fmt: skip
    return rows


def table(rows: list[dict], schema: pa.Schema = REQUEST_SCHEMA) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def expect_error(tab: pa.Table, column: str, row: int | None, what: str, source: str = "f.pq"):
    with pytest.raises(ValueError) as err:
        validate_table(tab, source)
    msg = str(err.value)
    assert msg.startswith(source) and f"column {column!r}" in msg and what in msg, msg
    if row is not None:
        assert f"row {row} (request_id={100 + row})" in msg, msg
    return msg


def test_valid_table_and_tasks():
    validate_table(table(make_rows(20)), "ok")
    assert task_names(REQUEST_SCHEMA) == ["click"]
    schema = REQUEST_SCHEMA.append(pa.field("tgt_like", pa.list_(pa.int8())))
    assert task_names(schema) == ["click", "like"]
    sampled = schema.append(pa.field("tgt_is_sampled", pa.list_(pa.int8())))
    assert task_names(sampled) == ["click", "like"]  # a marker, not a task


def test_is_sampled_marker_is_checked_like_a_target_list():
    t = table(make_rows(3))
    flags = pa.array(
        [[0] * len(v) for v in t.column("tgt_item_id").to_pylist()], pa.list_(pa.int8())
    )
    validate_table(t.append_column("tgt_is_sampled", flags), "ok")
    short = pa.array([[0] for _ in range(3)], pa.list_(pa.int8()))
    with pytest.raises(ValueError, match="tgt_is_sampled"):
        validate_table(t.append_column("tgt_is_sampled", short), "bad")


@pytest.mark.parametrize("column", list(CORE_TYPES))
def test_missing_core_column(column):
    expect_error(table(make_rows(3)).drop_columns([column]), column, None, "missing column")


@pytest.mark.parametrize(
    ("column", "typ"),
    [
        ("request_ts", pa.int32()),
        ("user_id", pa.string()),
        ("hist_item_id", pa.list_(pa.int32())),
        ("hist_ts", pa.list_(pa.float64())),
        ("tgt_category_id", pa.large_list(pa.int64())),
        ("tgt_click", pa.list_(pa.float32())),
        ("tgt_p_true", pa.list_(pa.float32())),
    ],
)
def test_wrong_type(column, typ):
    tab = table(make_rows(3))
    i = tab.column_names.index(column)
    bad = tab.set_column(i, pa.field(column, typ), tab.column(column).cast(typ))
    expect_error(bad, column, None, "expected")


def test_no_label_column():
    expect_error(table(make_rows(3)).drop_columns(["tgt_click"]), "tgt_<task>", None, "label")


def _append(col: str, value: object):
    return lambda row: row[col].append(value) or True


def _set(col: str, index: int, value: object):
    return lambda row: row[col].__setitem__(index, value) or True


def _pop(col: str):
    return lambda row: row[col].pop() is not None


def _swap(row: dict) -> bool:
    ts = row["hist_ts"]
    if len(ts) < 2:
        return False
    ts[0], ts[-1] = ts[-1], ts[0]
    return True


def _future(row: dict) -> bool:
    if not row["hist_ts"]:
        return False
    row["hist_ts"][-1] = row["request_ts"]
    return True


def _empty_targets(row: dict) -> bool:
    for c in ("tgt_item_id", "tgt_category_id", "tgt_click", "tgt_p_true"):
        row[c] = []
    return True


def _null(col: str):
    return lambda row: row.__setitem__(col, None) or True


#: name -> (column named in the error, part of the message, corrupt(row) -> applicable)
CORRUPTIONS = {
    "hist_length": ("hist_action", "differs", _append("hist_action", 1)),
    "tgt_length": ("tgt_click", "differs", _append("tgt_click", 0)),
    "p_true_length": ("tgt_p_true", "differs", _pop("tgt_p_true")),
    "unsorted": ("hist_ts", "not sorted", _swap),
    "future": ("hist_ts", ">= request_ts", _future),
    "label": ("tgt_click", "not in {0, 1}", _set("tgt_click", -1, 2)),
    "empty": ("tgt_item_id", "empty target list", _empty_targets),
    "null_list": ("hist_item_id", "null value", _null("hist_item_id")),
    "null_elem": ("tgt_item_id", "null element", _set("tgt_item_id", 0, None)),
}


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 12),
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(sorted(CORRUPTIONS)),
    pick=st.integers(0, 11),
)
def test_each_corruption_names_row_and_column(n, seed, kind, pick):
    rows = make_rows(n, seed)
    validate_table(table(rows), "ok")
    row = pick % n
    column, what, corrupt = CORRUPTIONS[kind]
    assume(corrupt(rows[row]))
    expect_error(table(rows), column, row, what)


def test_ties_in_history_are_allowed():
    rows = make_rows(2, min_hist=2)
    rows[1]["hist_ts"][1] = rows[1]["hist_ts"][0]
    validate_table(table(rows), "ties")


def test_validate_dataset_names_file_and_row_group(tmp_path):
    rows = make_rows(12, seed=3)
    pq.write_table(table(rows), tmp_path / "a.parquet", row_group_size=4)
    rows[9]["tgt_click"][0] = 5  # row group 2, row 1
    pq.write_table(table(rows), tmp_path / "b.parquet", row_group_size=4)
    assert validate_dataset(tmp_path / "a.parquet") == 12
    with pytest.raises(ValueError) as err:
        validate_dataset(tmp_path)
    msg = str(err.value)
    assert re.match(rf"{re.escape(str(tmp_path / 'b.parquet'))} \(row group 2\): ", msg), msg
    assert "column 'tgt_click', row 1 (request_id=109)" in msg
    with pytest.raises(ValueError, match="no .parquet files"):
        validate_dataset(tmp_path / "a.parquet.missing")


def test_split_writer_layout_and_empty_split(tmp_path):
    w = SplitWriter(tmp_path / "x", rows_per_file=5, row_group_size=2)
    for chunk in (make_rows(3), make_rows(4, seed=1)):
        w.add(table(chunk))
    files = w.close()
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [6, 1]
    assert pq.ParquetFile(files[0]).metadata.num_row_groups == 3
    assert validate_dataset(tmp_path / "x") == 7
    empty = SplitWriter(tmp_path / "y").close()
    assert len(empty) == 1 and pq.read_table(empty[0]).schema.equals(REQUEST_SCHEMA)


def test_committed_schema_file_matches_the_code():
    """data/schema/request.schema.txt documents REQUEST_SCHEMA; it must not drift."""
    from pathlib import Path

    from longseq.data.format import REQUEST_SCHEMA

    committed = Path(__file__).resolve().parents[2] / "data" / "schema" / "request.schema.txt"
    assert committed.read_text().strip() == str(REQUEST_SCHEMA).strip()
