"""The split manifest: written by SplitWriter and the index CLI, used by the reader only while it
matches the folder (same rows per rank, same resume state as without), checked by validate."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.data.format import REQUEST_SCHEMA
from longseq.data.index import index_path, split_folders
from longseq.data.manifest import (
    MANIFEST_NAME,
    ManifestWarning,
    build_manifest,
    manifest_problems,
    read_manifest,
    split_layout,
)
from longseq.data.reader import RequestReader, list_parquet_files
from longseq.data.writer import SplitWriter
from longseq.datasets.validate import validate_path

N = 50  # requests: files of 3 row groups of 5 rows, the last file of one
META = {"num_items": 1000, "num_categories": 10, "num_actions": 4, "tasks": ["click"]}


def _rows(start: int, n: int) -> pa.Table:
    i = list(range(start, start + n))
    cols = dict(request_id=i, user_id=[x % 7 for x in i], request_ts=[10_000 + x for x in i],
                hist_item_id=[[x, x + 1] for x in i], hist_category_id=[[1, 2]] * n,
                hist_action=[[0, 1]] * n, hist_ts=[[1, 2]] * n, tgt_item_id=[[x] for x in i],
                tgt_category_id=[[3]] * n, tgt_click=[[x % 2] for x in i], tgt_p_true=[[0.5]] * n)  # fmt: skip
    return pa.Table.from_pydict(cols, schema=REQUEST_SCHEMA)


def _write(root: Path, n: int = N) -> Path:
    w = SplitWriter(root / "train", rows_per_file=12, row_group_size=5)
    w.add(_rows(0, 23))
    w.add(_rows(23, n - 23))
    w.close()
    (root / "meta.json").write_text(json.dumps(META))
    return root / "train"


@pytest.fixture()
def split(tmp_path: Path) -> Path:
    return _write(tmp_path / "data")


def _epoch(split: Path, rank: int, world: int, **kw) -> tuple[list[list[int]], dict]:
    r = RequestReader(split, 4, rank, world, shuffle=True, shuffle_buffer=6, seed=3, **kw)
    it = iter(r)
    head = [t.column("request_id").to_pylist() for t in itertools.islice(it, 3)]
    state = r.state_dict()
    return head + [t.column("request_id").to_pylist() for t in it], state


def test_writer_writes_a_manifest_the_reader_uses(split: Path) -> None:
    m = read_manifest(split / MANIFEST_NAME)
    files = sorted(split.glob("*.parquet"))
    assert [e["path"] for e in m["files"]] == [f.name for f in files] and m["rows"] == N
    assert m["files"][0]["row_groups"] == [5, 5, 5] and m["files"][-1]["first_row"] == 45
    assert [e["bytes"] for e in m["files"]] == [f.stat().st_size for f in files]
    with_m, without = split_layout(split), split_layout(split, use_manifest=False)
    assert (with_m.source, without.source) == ("manifest", "footers")
    assert with_m.files == without.files and with_m.groups == without.groups
    assert [(f, s.equals(t)) for (f, s), (_, t) in zip(with_m.schemas, without.schemas)] == [
        (str(files[0]), True)
    ]
    empty = SplitWriter(split.parent / "empty").close()  # an empty split: still indexed
    assert read_manifest(empty[0].parent / MANIFEST_NAME)["rows"] == 0


def test_reader_rows_and_resume_state_are_the_same_without_the_manifest(split: Path) -> None:
    bare = split.parent.parent / "bare" / "train"
    shutil.copytree(split, bare)
    (bare / MANIFEST_NAME).unlink()
    for world in (1, 2, 3):
        for rank in range(world):
            a, sa = _epoch(split, rank, world)
            b, sb = _epoch(bare, rank, world)
            assert a == b and sa == sb, (rank, world)
            resumed = RequestReader(bare, 4, rank, world, shuffle=True, shuffle_buffer=6, seed=3)
            resumed.load_state_dict(sa)  # a position saved with the manifest resumes without it
            assert [t.column("request_id").to_pylist() for t in resumed] == a[3:]


@pytest.mark.parametrize("change", ["added", "removed", "resized", "garbled"])
def test_a_stale_manifest_warns_naming_the_file_and_falls_back(split: Path, change: str) -> None:
    files = sorted(split.glob("*.parquet"))
    expect, rows = {"added": ("x.parquet", N + 5), "removed": (files[1].name, N - 15),
                    "resized": (files[0].name, N - 5), "garbled": (MANIFEST_NAME, N)}[change]  # fmt: skip
    if change == "added":
        pq.write_table(_rows(N, 5), split / "x.parquet")
    elif change == "removed":
        files[1].unlink()
    elif change == "resized":
        pq.write_table(_rows(0, 10), files[0], row_group_size=3)
    else:
        (split / MANIFEST_NAME).write_text("{not json")
    with pytest.warns(ManifestWarning, match=rf"{MANIFEST_NAME}: stale.*{expect}"):
        reader = RequestReader(split, 100, shuffle=False)
    assert sum(t.num_rows for t in reader) == rows  # the footers' row groups
    assert split_layout(split, use_manifest=False).groups == reader.plan.groups
    if change != "garbled":
        assert any(expect in p for p in manifest_problems(split))


def test_index_cli_writes_what_the_writer_writes(split: Path, tmp_path: Path) -> None:
    written = (split / MANIFEST_NAME).read_bytes()
    (split / MANIFEST_NAME).unlink()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "longseq.data.index", f"path={split.parent}", "progress=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert str(split / MANIFEST_NAME) in proc.stdout
    assert (split / MANIFEST_NAME).read_bytes() == written
    assert not list(tmp_path.glob("outputs")) and not (tmp_path / ".hydra").exists()
    bad = subprocess.run(cmd[:3] + [f"path={tmp_path / 'nope'}"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "nope: not a folder" in bad.stderr, bad.stderr


def test_index_of_a_nested_split_and_of_a_data_set_root(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for name, (a, b) in {"train/x/p": (0, 7), "train/q": (7, 9), "test/r": (9, 12)}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_rows(a, b - a), root / f"{name}.parquet", row_group_size=2)
    (root / "_buckets").mkdir()
    assert split_folders(root) == [root / "test", root / "train"]
    assert split_folders(root / "train") == [root / "train"]
    assert index_path(root) == [root / "test" / MANIFEST_NAME, root / "train" / MANIFEST_NAME]
    m = read_manifest(root / "train" / MANIFEST_NAME)
    assert [(e["path"], e["row_groups"]) for e in m["files"]] == [("q.parquet", [2]),
                                                                    ("x/p.parquet", [2, 2, 2, 1])]  # fmt: skip
    assert m == build_manifest(root / "train") and split_layout(root / "train").source == "manifest"


def test_validate_catches_a_wrong_row_count_naming_the_file(split: Path) -> None:
    assert validate_path(split.parent, max_errors=10).ok
    path = split / MANIFEST_NAME
    m = json.loads(path.read_text())
    m["files"][1]["row_groups"][2] += 1
    m["files"][1]["rows"] += 1
    path.write_text(json.dumps(m))
    rep = validate_path(split.parent, max_errors=10)
    assert rep.manifests == 1 and rep.num_problems == 1, rep.problems
    name = split / m["files"][1]["path"]
    assert rep.problems[0] == f"{name}: row group 2 has 5 rows, {path} says 6"
    assert "1 manifest(s)" in rep.summary()
    for garbled in ("[]", json.dumps({**m, "schemas": ["not base64 Arrow"]})):
        path.write_text(garbled)
        (msg,) = validate_path(split, max_errors=10).problems
        assert msg.startswith(f"{path}: not a longseq.manifest.v1 manifest"), msg


def test_schema_problems_are_found_from_the_manifest(tmp_path: Path) -> None:
    schema = REQUEST_SCHEMA.remove(REQUEST_SCHEMA.get_field_index("hist_category_id"))
    w = SplitWriter(tmp_path / "train", schema, rows_per_file=20, row_group_size=5)
    w.add(_rows(0, 30).drop_columns(["hist_category_id"]))
    files = w.close()
    assert split_layout(tmp_path / "train").source == "manifest"
    with pytest.raises(ValueError, match=rf"{files[0].name}: column 'hist_category_id'"):
        RequestReader(tmp_path / "train", 4)


def test_listing_is_what_rglob_gives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`list_parquet_files` (os.scandir, for speed) lists what ``Path.rglob`` does."""
    for name in ["a.parquet", "b/c.parquet", "b/d/e.parquet", ".h.parquet", "x.txt",
                 "dir.parquet/f.parquet", "b/.parquet"]:  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "b")  # a link to a folder is not followed
    (tmp_path / "none").mkdir()
    monkeypatch.chdir(tmp_path)
    for d in [tmp_path, f"{tmp_path}/", tmp_path / "b", ".", "b"]:
        assert list_parquet_files(d) == sorted(str(p) for p in Path(d).rglob("*.parquet")), d
    with pytest.raises(FileNotFoundError, match="no .parquet files under none"):
        list_parquet_files("none")
