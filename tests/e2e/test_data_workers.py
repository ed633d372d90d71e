"""End-to-end: ``python -m longseq.train`` with data-loader worker processes (``data.num_workers=2``)
trains, checkpoints and resumes exactly; ``data.on_bad_row=skip`` trains through a corrupted file
and reports the dropped request in a JSON-lines file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from longseq.eval.load import load_model

pytestmark = pytest.mark.e2e


def _train(data: Path, run: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    args = [
        sys.executable, "-m", "longseq.train", "experiment=tiny", f"data.path={data}",
        f"run_dir={run}", f"trainer.max_steps={steps}", "trainer.checkpoint_every=3",
        "trainer.log_every=3", "trainer.progress=false", *extra,
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").open()]


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    ckpt = run / "checkpoints" / f"step_{step}"
    return load_model(ckpt, json.loads((ckpt / "longseq.json").read_text())).state_dict()


def test_two_workers_train_and_resume_exactly(tiny_data: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(tiny_data, straight, 6, "data.num_workers=2")
    _train(tiny_data, resumed, 3, "data.num_workers=2")
    pos = json.loads((resumed / "checkpoints/step_3/rank_0.json").read_text())
    assert pos["num_workers"] == 2 and pos["next_worker"] == 1 and len(pos["workers"]) == 2
    out = _train(tiny_data, resumed, 6, "data.num_workers=2", "resume=auto")
    assert "resumed from" in out.stderr
    a, b = _records(straight), _records(resumed)
    assert [r["requests_seen"] for r in a] == [r["requests_seen"] for r in b] == [24, 48]
    assert a[-1]["loss"] == pytest.approx(b[-1]["loss"], abs=1e-6)
    wa, wb = _weights(straight, 6), _weights(resumed, 6)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=f"resume changed {k}")


def test_skip_bad_rows_trains_and_reports(tiny_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    path = data / "train" / "part-00000.parquet"
    table = pq.read_table(path)
    labels = table.column("tgt_click").to_pylist()
    labels[0] = [3] + labels[0][1:]
    table = table.set_column(
        table.schema.get_field_index("tgt_click"),
        "tgt_click",
        pa.array(labels, pa.list_(pa.int8())),
    )
    pq.write_table(table, path, row_group_size=32)
    rid = table.column("request_id")[0].as_py()
    run = tmp_path / "run"
    bad = subprocess.run(  # the default policy stops with the file, row and column
        [sys.executable, "-m", "longseq.train", "experiment=tiny", f"data.path={data}",
         f"run_dir={tmp_path / 'err'}", "trainer.max_steps=30", "trainer.progress=false"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"},
    )  # fmt: skip
    assert bad.returncode != 0
    assert str(path) in bad.stderr and f"row 0 (request_id={rid})" in bad.stderr
    assert "'tgt_click'" in bad.stderr
    log = tmp_path / "bad_rows.jsonl"
    out = _train(data, run, 30, "data.on_bad_row=skip", f"data.bad_rows_log={log}",
                 "data.num_workers=2")  # fmt: skip
    records = [json.loads(x) for x in log.read_text().splitlines()]
    assert records and all(r["request_id"] == rid and r["column"] == "tgt_click" for r in records)
    assert f"request_id={rid}" in out.stderr
    assert _records(run)[-1]["requests_seen"] == 30 * 8


def test_token_budget_batches_train_on_two_ranks(tiny_data: Path, tmp_path: Path) -> None:
    """``data.max_tokens``: ranks hold different request counts per step (row-wise item table,
    the default plan) and still train; fewer requests than batch_size-sized batches."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    args = [
        str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node", "2",
        "-m", "longseq.train", "experiment=tiny", f"data.path={tiny_data}", f"run_dir={run}",
        "trainer.max_steps=4", "trainer.log_every=4", "trainer.checkpoint_every=4",
        "trainer.progress=false", "data.batch_size=16", "data.max_tokens=600",
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    (rec,) = _records(run)
    assert rec["loss"] > 0 and 2 * 4 <= rec["requests_seen"] < 2 * 4 * 16
