"""``longseq.datasets.stats``: every number against a direct pyarrow/numpy computation on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from longseq.datasets.stats import dataset_stats, find_splits, markdown
from longseq.datasets.synth import SynthConfig, generate


def _direct(split: Path) -> dict:
    """The statistics of one split computed from the whole table at once."""
    files = sorted(split.rglob("*.parquet"))
    t = pq.read_table(split)
    lens = pc.list_value_length(t.column("hist_ts")).to_numpy()
    tpr = pc.list_value_length(t.column("tgt_item_id")).to_numpy()
    clicks = pc.list_flatten(t.column("tgt_click")).to_numpy()
    size = sum(f.stat().st_size for f in files)
    pct = {f"p{q}": int(np.percentile(lens, q, method="inverted_cdf")) for q in (0, 50, 90, 99)}
    return {
        "files": len(files),
        "requests": t.num_rows,
        "targets": int(tpr.sum()),
        "users": int(np.unique(t.column("user_id").to_numpy()).size),
        "targets_per_request": {"mean": tpr.mean(), "min": int(tpr.min()), "max": int(tpr.max())},
        "hist_len": {"mean": lens.mean(), **pct, "max": int(lens.max())},
        "label_rate": {"click": clicks.mean()},
        "bytes_on_disk": size,
        "bytes_per_request": size / t.num_rows,
        "bytes_per_target": size / tpr.sum(),
    }


def test_numbers_match_direct_computation(tiny_data: Path) -> None:
    stats = dataset_stats(tiny_data)
    assert list(stats["splits"]) == ["train", "test"]
    for name, got in stats["splits"].items():
        want = _direct(tiny_data / name)
        for key, value in want.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    assert got[key][k] == pytest.approx(v, rel=1e-12), (name, key, k)
            else:
                assert got[key] == pytest.approx(value, rel=1e-12), (name, key)
        assert got["pointwise_bytes_per_target_estimate"] > got["bytes_per_target"]
    # a split folder on its own gives the same numbers
    alone = dataset_stats(tiny_data / "test")
    assert alone["splits"] == {"test": stats["splits"]["test"]}
    assert "estimate" in markdown(stats) and "| label rate click |" in markdown(stats)


def _repeated_bytes(split: Path) -> int:
    """Compressed bytes of the columns a pointwise layout repeats per target."""
    total = 0
    for f in sorted(split.rglob("*.parquet")):
        md = pq.ParquetFile(f).metadata
        for g in range(md.num_row_groups):
            for j in range(md.num_columns):
                col = md.row_group(g).column(j)
                if not col.path_in_schema.startswith("tgt_"):
                    total += col.total_compressed_size
    return total


@pytest.mark.parametrize("targets", [1, 4])
def test_pointwise_estimate_closed_form(tiny_data: Path, tmp_path: Path, targets: int) -> None:
    """Fixed history length and T targets: pointwise = on disk + (T - 1) * repeated bytes."""
    conf = json.loads((tiny_data / "meta.json").read_text())["config"]
    over = dict(out=str(tmp_path), hist_len_dist="fixed", hist_len=40, targets_per_request=targets)
    generate(SynthConfig(**{**conf, **over, "progress": False, "oracle_windows": [16]}))
    data = tmp_path
    for name, got in dataset_stats(data)["splits"].items():
        want = got["bytes_on_disk"] + (targets - 1) * _repeated_bytes(data / name)
        assert got["pointwise_bytes_per_target_estimate"] * got["targets"] == pytest.approx(want)
        assert got["hist_len"]["p0"] == got["hist_len"]["max"] == 40


def test_find_splits_rejects_a_folder_without_parquet(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no .parquet"):
        find_splits(tmp_path)


def test_cli_prints_markdown_and_writes_json(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "stats.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "longseq.datasets.stats", f"path={tiny_data}", f"out={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "| requests | 102 | 26 |" in proc.stdout and "(estimate)" in proc.stdout
    assert json.loads(out.read_text()) == json.loads(json.dumps(dataset_stats(tiny_data)))
