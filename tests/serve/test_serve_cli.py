"""``python -m longseq.serve`` end to end on the tiny data set: exit 0, one Parquet row per
target of the split, the evaluation's scores; bad input names the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from common import build, save  # noqa: E402

#: the evaluation's one-process load (intended) warns through DCP
pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _serve(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "longseq.serve", "progress=false", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def ckpt(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    save(build("stca_kv_padded", tiny_data, seed=5), tiny_data, run)
    return run  # a run dir: resolved to its latest checkpoint, as eval does


def test_cli_scores_the_split_as_eval_does(ckpt: Path, tiny_data: Path, tmp_path: Path) -> None:
    from longseq.eval.load import load_model, resolve_checkpoint
    from longseq.eval.predict import predict
    from longseq.parallel.checkpoint import verify_checkpoint

    out = tmp_path / "out"
    proc = _serve(
        f"checkpoint={ckpt}", f"data.path={tiny_data}", f"out={out}", "window=64", "threads=1"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "requests/s" in proc.stdout and "candidates/s" in proc.stdout
    got = pq.read_table(out / "scores.parquet")
    assert got.column_names == [
        "request_id", "user_id", "target_index", "score_click", "label_click"
    ]  # fmt: skip
    meta = json.loads((tiny_data / "meta.json").read_text())
    assert len({*got.column("request_id").to_pylist()}) == meta["num_requests"]["test"]
    c = resolve_checkpoint(ckpt)
    want = predict(load_model(c, verify_checkpoint(c)), tiny_data / "test", 64, 64, progress=False)
    assert got.num_rows == len(want.request_id)
    np.testing.assert_array_equal(got.column("request_id").to_numpy(), want.request_id)
    np.testing.assert_array_equal(got.column("target_index").to_numpy(), want.target_index)
    diff = np.abs(got.column("score_click").to_numpy() - want.scores[:, 0]).max()
    assert diff <= 1e-5, diff


def test_bad_input_names_the_key(ckpt: Path, tiny_data: Path, tmp_path: Path) -> None:
    proc = _serve(f"checkpoint={tmp_path / 'nope'}", f"data.path={tiny_data}", f"out={tmp_path}")
    assert proc.returncode != 0 and "checkpoint=" in proc.stderr, proc.stderr[-2000:]
    proc = _serve(
        f"checkpoint={ckpt}", f"data.path={tiny_data}", "data.split=val", f"out={tmp_path}"
    )
    assert proc.returncode != 0 and "data.split=val" in proc.stderr, proc.stderr[-2000:]
