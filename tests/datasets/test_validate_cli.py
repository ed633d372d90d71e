"""``python -m longseq.datasets.validate``: the real CLI on the synth tiny preset and on corrupted copies.

Each corruption must make the CLI exit non-zero with a message naming the file, the row group, the
row (request_id) and the column; the valid data passes; no file is ever modified.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.data.checks import row_problems
from longseq.data.manifest import write_manifest
from longseq.datasets.validate import validate_path

BAD_FILE = "train/part-00000.parquet"
BAD_GROUP, BAD_ROW = 2, 5  # row 5 of row group 2 (row groups of 32 rows in the tiny preset)


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("validate") / "tiny"
    proc = _run("longseq.datasets.synth", "preset=tiny", f"out={out}", "seed=1", "progress=false")
    assert proc.returncode == 0, proc.stderr
    return out


def _edit_list(table: pa.Table, column: str, row: int, fn: Callable[[list], list]) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row] = fn(values[row])
    arr = pa.array(values, type=table.schema.field(column).type)
    return table.set_column(table.schema.get_field_index(column), column, arr)


def _corrupt(src: Path, dst: Path, how: str) -> int:
    """Copy the data set ``src`` to ``dst`` and corrupt BAD_FILE; return the bad request_id."""
    shutil.copytree(src, dst)
    path = dst / BAD_FILE
    pf = pq.ParquetFile(path)
    size = pf.metadata.row_group(0).num_rows
    table = pf.read()
    row = BAD_GROUP * size + BAD_ROW
    rid = table.column("request_id")[row].as_py()
    num_items = json.loads((dst / "meta.json").read_text())["num_items"]
    req_ts = table.column("request_ts")[row].as_py()
    if how == "hist_ts":
        table = _edit_list(table, "hist_ts", row, lambda v: v[:-1] + [req_ts])
    elif how == "length":
        table = _edit_list(table, "hist_action", row, lambda v: v[:-1])
    elif how == "label":
        table = _edit_list(table, "tgt_click", row, lambda v: [2] + v[1:])
    elif how == "item_id":
        table = _edit_list(table, "tgt_item_id", row, lambda v: v[:-1] + [num_items])
    elif how == "missing":
        table = table.drop_columns(["hist_category_id"])
    pq.write_table(table, path, row_group_size=size)
    return rid


CASES = {  # how -> (column named in the message, problem text, names a row)
    "hist_ts": ("hist_ts", "request_ts", True),
    "length": ("hist_action", "length", True),
    "label": ("tgt_click", "label", True),
    "item_id": ("tgt_item_id", "num_items", True),
    "missing": ("hist_category_id", "missing column", False),
}


def test_valid_data_passes_and_is_untouched(synth: Path) -> None:
    before = _digests(synth)
    proc = _run("longseq.datasets.validate", f"path={synth}")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((synth / "meta.json").read_text())
    n = sum(meta["num_requests"].values())
    assert f"{n:,} requests" in proc.stdout
    assert f"{n * meta['targets_per_request']:,} targets" in proc.stdout
    assert "meta.json" in proc.stdout
    assert _digests(synth) == before


@pytest.mark.parametrize("how", list(CASES))
def test_corruption_is_reported(synth: Path, tmp_path: Path, how: str) -> None:
    original = _digests(synth)
    bad = tmp_path / "bad"
    rid = _corrupt(synth, bad, how)
    corrupted = _digests(bad)
    proc = _run("longseq.datasets.validate", f"path={bad}", "progress=false")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    msg = proc.stderr
    column, what, names_row = CASES[how]
    assert str(bad / BAD_FILE) in msg and f"column {column!r}" in msg and what in msg, msg
    if names_row:
        assert f"(row group {BAD_GROUP})" in msg, msg
        assert f"row {BAD_ROW} (request_id={rid})" in msg, msg
    assert _digests(bad) == corrupted  # validate never writes
    assert _digests(synth) == original


def test_max_errors_counts_every_problem(synth: Path, tmp_path: Path) -> None:
    """Two corrupted rows in one file (label, item id): both found, counted and listed."""
    bad = tmp_path / "bad"
    _corrupt(synth, bad, "label")
    path = bad / BAD_FILE
    table = _edit_list(pq.read_table(path), "hist_item_id", 0, lambda v: [-1] + v[1:])
    pq.write_table(table, path, row_group_size=32)
    rep = validate_path(bad, max_errors=10)
    assert rep.num_problems == 3 and f"{path}: " in rep.problems[2]  # the manifest: file rewritten
    write_manifest(path.parent)
    rep = validate_path(bad, max_errors=10)
    assert rep.num_problems == 2 and len(rep.problems) == 2 and not rep.stopped_early
    assert "negative id" in rep.problems[0] and "(row group 0)" in rep.problems[0]
    assert "label not in {0, 1}" in rep.problems[1]
    assert validate_path(bad).stopped_early  # max_errors=1: stops at the first
    proc = _run("longseq.datasets.validate", f"path={bad}", "max_errors=5", "progress=false")
    assert proc.returncode == 1 and "2 problem(s)" in proc.stderr, proc.stderr


def test_row_problems_agree_with_validate_table_on_valid_data(synth: Path) -> None:
    for f in sorted(synth.rglob("*.parquet")):
        assert row_problems(pq.read_table(f), {"tgt_item_id": 400}) == []


def test_nonexistent_path_says_so(tmp_path: Path) -> None:
    proc = _run("longseq.datasets.validate", f"path={tmp_path / 'nope'}", "progress=false")
    assert proc.returncode != 0 and "does not exist" in proc.stderr, proc.stderr


@pytest.mark.parametrize("how", ["no_train", "no_meta", "extra_file", "row_count"])
def test_data_set_layout_disagreeing_with_meta_json_fails(synth: Path, tmp_path: Path, how: str):
    bad = tmp_path / "bad"
    shutil.copytree(synth, bad)
    meta_file = bad / "meta.json"
    meta = json.loads(meta_file.read_text())
    if how == "no_train":
        shutil.rmtree(bad / "train")
        expect = "train: does not exist"
    elif how == "no_meta":
        meta_file.unlink()
        expect = "meta.json: missing; the trainer needs it with the keys num_items"
    elif how == "extra_file":
        shutil.copy(bad / BAD_FILE, bad / "train" / "part-00009.parquet")
        expect = "files differ from"
    else:
        meta["num_requests"]["train"] += 1
        meta_file.write_text(json.dumps(meta))
        expect = "num_requests"
    rep = validate_path(bad, max_errors=10)
    assert not rep.ok and any(expect in p for p in rep.problems), rep.problems
    if how == "no_meta":  # the CLI too: exit 1 with the message
        proc = _run("longseq.datasets.validate", f"path={bad}", "progress=false")
        assert proc.returncode == 1 and expect in proc.stderr, proc.stderr
