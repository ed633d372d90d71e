"""Shared converter behaviour: byte-identical output across runs, block sizes and (in content)
bucket counts; clear errors naming the file, line and column; the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from convert_ref import convert, read_rows
from raw_fixtures import KUAI_LOG_HEADER, write_kuairand, write_taobao

from longseq.datasets.convert.config import ConvertConfig

SPLITS = ("train", "valid", "test", "test_random")


@pytest.fixture(scope="module")
def kuai_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("raw")
    write_kuairand(root, "pure", users=4)
    return root


def _files(out: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}
    files |= {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.npy"))}
    meta = json.loads((out / "meta.json").read_text())
    for k in ("src", "out", "tmp", "block_mb"):
        meta["config"].pop(k)
    stats = json.loads((out / "stats.json").read_text())
    stats.pop("run")  # wall time and peak memory
    files["meta.json"] = json.dumps(meta).encode()
    files["stats.json"] = json.dumps(stats).encode()
    return files


def test_identical_bytes_across_runs_and_block_sizes(kuai_raw: Path, tmp_path: Path) -> None:
    convert("kuairand", kuai_raw, tmp_path / "a", bucket_mb=0.01)
    convert("kuairand", kuai_raw, tmp_path / "b", bucket_mb=0.01)
    convert("kuairand", kuai_raw, tmp_path / "c", bucket_mb=0.01, block_mb=0.002)
    a = _files(tmp_path / "a")
    assert len([k for k in a if k.endswith(".parquet")]) == 4
    assert a == _files(tmp_path / "b") == _files(tmp_path / "c")
    assert not (tmp_path / "a" / "_buckets").exists()  # temporary buckets removed


def test_same_requests_whatever_the_bucket_count(kuai_raw: Path, tmp_path: Path) -> None:
    one = convert("kuairand", kuai_raw, tmp_path / "one", bucket_mb=64)
    many = convert("kuairand", kuai_raw, tmp_path / "many", bucket_mb=0.005)
    assert one["input"]["buckets"] == 1 and many["input"]["buckets"] >= 8

    def content(out: Path, split: str) -> list[str]:
        rows = read_rows(out, split)
        for r in rows:
            r.pop("request_id")
        return sorted(json.dumps(r, sort_keys=True) for r in rows)

    for s in SPLITS:
        assert content(tmp_path / "one", s) == content(tmp_path / "many", s)
    assert one["splits"] == many["splits"]


def test_sampling_keeps_a_seeded_subset(kuai_raw: Path, tmp_path: Path) -> None:
    full = convert("kuairand", kuai_raw, tmp_path / "full")
    half = convert("kuairand", kuai_raw, tmp_path / "half", opts={"sample": {"train": 0.5}})
    n_full, n_half = full["splits"]["train"]["requests"], half["splits"]["train"]["requests"]
    assert 0.2 * n_full < n_half < 0.8 * n_full
    assert half["splits"]["test"] == full["splits"]["test"]
    keys = {(r["user_id"], r["request_ts"]) for r in read_rows(tmp_path / "full", "train")}
    assert {(r["user_id"], r["request_ts"]) for r in read_rows(tmp_path / "half", "train")} <= keys


def test_missing_inputs_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.*not a folder"):
        convert("kuairand", tmp_path / "nope", tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="log_standard"):
        convert("kuairand", tmp_path / "empty", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="UserBehavior"):
        convert("taobao", tmp_path / "empty", tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="ratings.dat, u.data or ratings.csv"):
        convert("movielens", tmp_path / "empty", tmp_path / "o")


def _kuai_log(tmp_path: Path, lines: list[str], header: str = KUAI_LOG_HEADER) -> Path:
    d = tmp_path / "bad"
    d.mkdir(exist_ok=True)
    f = d / "log_standard_4_22_to_5_08_pure.csv"
    f.write_text(header + "\n" + "\n".join(lines) + "\n")
    return f


GOOD = "7,100,20220506,1015,1651803300000,1,0,0,0,0,0,1,10,20,0,0,0,0,1"


def test_malformed_value_names_file_line_and_column(tmp_path: Path) -> None:
    f = _kuai_log(tmp_path, [GOOD, GOOD, GOOD.replace(",100,", ",abc,")])
    with pytest.raises(ValueError, match=rf"{f}: line 4, column 'video_id': cannot read 'abc'"):
        convert("kuairand", tmp_path / "bad", tmp_path / "o", block_mb=0.001)
    _kuai_log(tmp_path, [GOOD, GOOD.replace(",1,0,0,0,0,0,1,", ",2,0,0,0,0,0,1,")])
    with pytest.raises(ValueError, match="line 3, column 'is_click': value 2 not 0/1"):
        convert("kuairand", tmp_path / "bad", tmp_path / "o")
    _kuai_log(tmp_path, [GOOD], header=KUAI_LOG_HEADER.replace("time_ms", "t_ms"))
    with pytest.raises(ValueError, match=r"line 1 \(header\): missing column\(s\) \['time_ms'\]"):
        convert("kuairand", tmp_path / "bad", tmp_path / "o")
    _kuai_log(tmp_path, [GOOD, GOOD[:-4]])
    with pytest.raises(
        ValueError, match=r"log_standard_4_22_to_5_08_pure.csv: near line 2.*Expected 19 columns"
    ):
        convert("kuairand", tmp_path / "bad", tmp_path / "o")


def test_taobao_unknown_behavior_names_the_line(tmp_path: Path) -> None:
    write_taobao(tmp_path / "tb")
    f = tmp_path / "tb" / "UserBehavior.csv"
    lines = f.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 2)[0] + ",click," + lines[2].rsplit(",", 1)[1]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        ValueError, match=r"UserBehavior.csv: line 3, column 'behavior_type': 'click' not in"
    ):
        convert("taobao", tmp_path / "tb", tmp_path / "o")


def test_config_errors_name_the_key() -> None:
    cfg = ConvertConfig(dataset="kuairand", src="x", out="y")
    cfg.kuairand.max_targets = 0
    with pytest.raises(ValueError, match="kuairand.max_targets must be >= 1"):
        cfg.validate()
    with pytest.raises(ValueError, match="dataset='criteo' must be kuairand"):
        ConvertConfig(dataset="criteo", src="x", out="y").validate()


def test_cli_converts_and_reports_errors(kuai_raw: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "longseq.datasets.convert", "dataset=kuairand", f"src={kuai_raw}"]
    ok = subprocess.run([*cmd, f"out={tmp_path / 'o'}", "kuairand.gap_s=300", "progress=false"],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "converted kuairand (KuaiRand-Pure)" in ok.stdout and "test_random:" in ok.stdout
    assert (
        json.loads((tmp_path / "o" / "meta.json").read_text())["config"]["kuairand"]["gap_s"] == 300
    )
    bad = subprocess.run([*cmd[:-1], f"src={tmp_path}/missing", f"out={tmp_path / 'o2'}"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "missing" in bad.stderr and "not a folder" in bad.stderr


def test_small_row_groups_and_files_hold_the_same_rows(kuai_raw: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from longseq.data.manifest import split_layout
    from longseq.datasets.validate import validate_path

    convert("kuairand", kuai_raw, tmp_path / "big")
    convert("kuairand", kuai_raw, tmp_path / "small", row_group_size=4, rows_per_file=10,
            hist_chunk_events=50)  # fmt: skip
    assert validate_path(tmp_path / "small").ok  # the manifests the converter wrote too
    assert {split_layout(tmp_path / "small" / s).source for s in SPLITS} == {"manifest"}
    files = sorted((tmp_path / "small" / "train").glob("*.parquet"))
    assert len(files) > 2
    for f in files:
        md = pq.ParquetFile(f).metadata
        assert md.num_rows <= 12 and all(
            md.row_group(g).num_rows <= 4 for g in range(md.num_row_groups)
        )
    for s in SPLITS:
        assert read_rows(tmp_path / "big", s) == read_rows(tmp_path / "small", s)
