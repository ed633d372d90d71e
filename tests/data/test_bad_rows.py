"""``on_bad_row``: each kind of bad request stops the reader with a message naming file, row
group, row (request_id) and column (``error``), or is dropped, counted and reported (``skip``)."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from longseq.data.config import DataConfig
from longseq.data.reader import RequestReader
from longseq.data.stream import build_train_stream
from longseq.log import setup_logging

BAD_FILE = "train/part-00000.parquet"
GROUP, ROW = 1, 3  # row 3 of row group 1 (row groups of 32 rows in the tiny preset)


def _edit(table: pa.Table, column: str, row: int, fn: Callable) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = fn(values[row])
    arr = pa.array(values, type=table.schema.field(column).type)
    return table.set_column(table.schema.get_field_index(column), column, arr)


def _empty_targets(t: pa.Table, row: int) -> pa.Table:
    for c in [c for c in t.column_names if c.startswith("tgt_")]:
        t = _edit(t, c, row, lambda v: [])
    return t


KINDS: dict[str, tuple[str, str, Callable[[pa.Table, int, dict], pa.Table]]] = {
    # kind -> (column named, problem text, corruption)
    "hist_after_request": ("hist_ts", "request_ts", lambda t, r, m: _edit(
        t, "hist_ts", r, lambda v: v[:-1] + [t.column("request_ts")[r].as_py()])),
    "unsorted_history": ("hist_ts", "not sorted", lambda t, r, m: _edit(
        t, "hist_ts", r, lambda v: v[::-1] if len(set(v)) > 1 else v)),
    "length_mismatch": ("hist_action", "length", lambda t, r, m: _edit(
        t, "hist_action", r, lambda v: v[:-1])),
    "label_value": ("tgt_click", "label not in", lambda t, r, m: _edit(
        t, "tgt_click", r, lambda v: [2] + v[1:])),
    "item_out_of_range": ("tgt_item_id", "num_items", lambda t, r, m: _edit(
        t, "tgt_item_id", r, lambda v: v[:-1] + [m["num_items"]])),
    "negative_category": ("hist_category_id", "negative id", lambda t, r, m: _edit(
        t, "hist_category_id", r, lambda v: [-1] + v[1:])),
    "action_out_of_range": ("hist_action", "num_actions", lambda t, r, m: _edit(
        t, "hist_action", r, lambda v: [m["num_actions"]] + v[1:])),
    "null_history": ("hist_item_id", "null", lambda t, r, m: _edit(
        t, "hist_item_id", r, lambda v: None)),
    "empty_targets": ("tgt_item_id", "empty target list", lambda t, r, m: _empty_targets(t, r)),
}  # fmt: skip


def _corrupt(src: Path, dst: Path, kind: str) -> int:
    """Copy the data set and corrupt one request of BAD_FILE; return its request_id."""
    shutil.copytree(src, dst)
    path = dst / BAD_FILE
    pf = pq.ParquetFile(path)
    size = pf.metadata.row_group(0).num_rows
    table = pf.read()
    row = GROUP * size + ROW
    meta = json.loads((dst / "meta.json").read_text())
    table = KINDS[kind][2](table, row, meta)
    pq.write_table(table, path, row_group_size=size)
    return table.column("request_id")[row].as_py()


def _epoch_ids(split: Path, **kw) -> list[int]:
    ids = []
    for rank in range(2):
        r = RequestReader(split, 7, rank, 2, shuffle_buffer=20, **kw)
        ids += [i for t in r for i in t.column("request_id").to_pylist()]
    return ids


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_bad_kind_errors_clearly_or_is_skipped_and_reported(
    tiny_data: Path, tmp_path: Path, kind: str, capfd: pytest.CaptureFixture
) -> None:
    setup_logging(0)  # warnings go to stderr as under the CLIs
    bad = tmp_path / "bad"
    rid = _corrupt(tiny_data, bad, kind)
    column, what, _ = KINDS[kind]
    with pytest.raises(ValueError) as err:
        _epoch_ids(bad / "train")
    msg = str(err.value)
    assert str(bad / BAD_FILE) in msg and f"(row group {GROUP})" in msg, msg
    assert f"row {ROW} (request_id={rid})" in msg and repr(column) in msg and what in msg, msg
    assert "on_bad_row=skip" in msg

    log = tmp_path / "bad_rows.jsonl"
    ids = _epoch_ids(bad / "train", on_bad_row="skip", bad_rows_log=str(log))
    good = _epoch_ids(tiny_data / "train")
    assert sorted(ids) == sorted(i for i in good if i != rid)  # dropped; no other loss/duplicate
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(records) == 1, records
    rec = records[0]
    assert rec["file"] == str(bad / BAD_FILE) and rec["row_group"] == GROUP
    assert rec["row"] == ROW and rec["request_id"] == rid and column in rec["column"]
    assert what in rec["reason"] and rec["rows"] == 1
    err_out = capfd.readouterr().err
    assert "skipped bad request" in err_out and f"request_id={rid}" in err_out


def test_skip_without_log_file_reports_on_stderr_and_counts(
    tiny_data: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    """Training stream: the count is in the position, each drop is a stderr line, batches stay
    full and resumption stays exact across the skipped request."""
    setup_logging(0)  # warnings go to stderr as under the CLIs
    bad = tmp_path / "bad"
    rid = _corrupt(tiny_data, bad, "label_value")
    cfg = DataConfig(path=str(bad), batch_size=6, shuffle_buffer=16, on_bad_row="skip")
    s = build_train_stream(cfg, 0, 1, 0, ["click"], torch.device("cpu"))
    n = 40  # > two epochs of ~100 requests
    batches = [b.request_ids.tolist() for b in itertools.islice(s, n)]
    assert all(len(b) == 6 for b in batches)
    flat = [i for b in batches for i in b]
    assert rid not in flat
    mid = s.position_after(17)
    pos = s.position_after(n)
    epoch = pos["workers"][0]["reader"]["epoch"]  # epochs 0 .. epoch-1 done, epoch begun
    assert epoch >= 2 and pos["reader"]["bad_rows"] in (epoch, epoch + 1)
    lines = [x for x in capfd.readouterr().err.splitlines() if "skipped bad request" in x]
    assert len(lines) == pos["reader"]["bad_rows"]  # once per epoch read, never silently
    assert all(f"request_id={rid}" in x and "tgt_click" in x for x in lines)
    resumed = build_train_stream(cfg, 0, 1, 0, ["click"], torch.device("cpu"))
    resumed.load_position(mid)
    assert [b.request_ids.tolist() for b in itertools.islice(resumed, n - 17)] == batches[17:]
    assert resumed.position_after(n - 17)["reader"]["bad_rows"] == pos["reader"]["bad_rows"]


def test_file_level_problems_fail_at_start_in_both_modes(tiny_data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(tiny_data, bad)
    path = bad / BAD_FILE
    pq.write_table(pq.read_table(path).drop_columns(["hist_category_id"]), path)
    for policy in ("error", "skip"):
        with pytest.raises(ValueError, match=r"part-00000\.parquet: column 'hist_category_id'"):
            RequestReader(bad / "train", 4, on_bad_row=policy)
    path.write_bytes(b"not a parquet file")
    with pytest.raises(ValueError, match=r"part-00000\.parquet.*(Parquet|parquet)"):
        RequestReader(bad / "train", 4, on_bad_row="skip")


def test_bad_policy_value_names_the_key(tiny_data: Path) -> None:
    with pytest.raises(ValueError, match="data.on_bad_row"):
        RequestReader(tiny_data / "train", 4, on_bad_row="ignore")
    with pytest.raises(ValueError, match="data.on_bad_row"):
        DataConfig(path=str(tiny_data), on_bad_row="drop").validate()


def test_error_in_a_worker_process_reaches_the_trainer_with_its_message(
    tiny_data: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    rid = _corrupt(tiny_data, bad, "item_out_of_range")
    cfg = DataConfig(path=str(bad), batch_size=8, shuffle_buffer=16, num_workers=2)
    s = build_train_stream(cfg, 0, 1, 0, ["click"], torch.device("cpu"))
    with pytest.raises(ValueError) as err:
        for _ in range(40):  # two epochs: every row group is met
            next(s)
    msg = str(err.value)
    assert str(bad / BAD_FILE) in msg and f"row {ROW} (request_id={rid})" in msg, msg
    assert "'tgt_item_id'" in msg
    s.close()
