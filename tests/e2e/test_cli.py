"""End-to-end: the real CLIs on tiny synthetic data (synth -> 2-process torchrun train -> resume
-> eval), as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from longseq.data.reader import planned_requests

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "tiny"
    _run([sys.executable, "-m", "longseq.datasets.synth", "preset=tiny", f"out={out}", "seed=1"])
    return out


def _train1(data: Path, run_dir: str, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m longseq.train experiment=tiny`` with one process."""
    cmd = [sys.executable, "-m", "longseq.train", "experiment=tiny", f"data.path={data}"]
    return _run([*cmd, run_dir, *overrides])


def _eval(
    run: Path, data: Path, out: Path, *overrides: str, nproc: int = 1
) -> subprocess.CompletedProcess:
    """``python -m longseq.eval`` (``nproc`` > 1: under torchrun) on ``run``'s latest checkpoint."""
    head = (
        [sys.executable] if nproc == 1 else [str(BIN / "torchrun"), "--nproc-per-node", str(nproc)]
    )
    args = [f"checkpoint={run}", f"data.path={data}", f"out={out}", "progress=false", *overrides]
    return _run([*head, "-m", "longseq.eval", *args])


def _steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]


def test_train_resume_eval(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    torchrun = [str(BIN / "torchrun"), "--nproc-per-node", "2", "-m", "longseq.train"]
    common = [
        "experiment=tiny",
        f"data.path={tiny_data}",
        f"run_dir={run}",
        "trainer.progress=false",
    ]
    _run(torchrun + common + ["trainer.max_steps=10", "trainer.checkpoint_every=5"])
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_10"
    assert (run / "config.yaml").is_file()
    assert _steps(run) == [5, 10]
    first = json.loads((run / "checkpoints/step_10/longseq.json").read_text())
    assert first["world_size"] == 2 and first["step"] == 10

    # the resumed run also evaluates at the end: collectively over both training ranks
    resumed = _run(
        torchrun
        + common
        + [
            "trainer.max_steps=20",
            "resume=auto",
            "trainer.eval_at_end=true",
            "trainer.eval_windows=[64]",
        ]
    )
    assert "resumed from" in resumed.stderr and "step_10" in resumed.stderr
    assert _steps(run) == [5, 10, 15, 20, 20]  # continues at 15; the last line is the eval
    in_training = json.loads((run / "eval" / "eval.json").read_text())
    assert in_training["world_size"] == 2 and in_training["results"][0]["window"] == 64
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert "test/auc/click@64" in records[-1]  # the end evaluation: <eval_split>/...
    records = [r for r in records if "loss" in r]
    assert all(r["loss"] > 0 for r in records)
    # the trainer consumed exactly each rank's first 20 batches across the resume
    assert records[-1]["requests_seen"] == planned_requests(
        tiny_data / "train", 8, 2, 20, shuffle_buffer=64
    )

    out = tmp_path / "eval"
    proc = _eval(run, tiny_data, out, "windows=[16,256]", "save_predictions=true")
    assert "| window |" in proc.stdout
    result = json.loads((out / "eval.json").read_text())
    assert result["step"] == 20
    assert [r["window"] for r in result["results"]] == [16, 256]
    meta = json.loads((tiny_data / "meta.json").read_text())
    for r in result["results"]:
        assert 0.0 <= r["auc"] <= 1.0 and r["nll"] > 0
        assert r["requests"] == meta["num_requests"]["test"]
        assert r["served_len_max"] <= r["window"]
    # oracle ceilings exist from window 50 up; the 16-event window has none below it
    assert result["results"][0]["oracle"] is None
    assert result["results"][1]["oracle"]["window"] == 256
    assert (out / "auc_vs_window.png").stat().st_size > 1000
    # distributed evaluation under torchrun: bit-identical to the one-process numbers
    small = ("windows=[16,256]", "data.batch_size=8")
    _eval(run, tiny_data, tmp_path / "eval2", *small, nproc=2)
    dist_result = json.loads((tmp_path / "eval2" / "eval.json").read_text())
    assert dist_result["world_size"] == 2
    one = _eval(run, tiny_data, tmp_path / "eval1", *small)
    assert "| window |" in one.stdout
    single = json.loads((tmp_path / "eval1" / "eval.json").read_text())
    assert dist_result["results"] == single["results"]
    # sharded evaluation: tables split over the 2 ranks by TorchRec, same numbers again
    tables = (
        "sharded=true",
        "sharding_tables.item=table_wise",
        "+sharding_tables.category=row_wise",
    )
    _eval(run, tiny_data, tmp_path / "eval_sharded", *small, *tables, nproc=2)
    sharded = json.loads((tmp_path / "eval_sharded" / "eval.json").read_text())
    assert sharded["sharded"] is True and sharded["world_size"] == 2
    assert sharded["results"] == single["results"]
    import pyarrow.parquet as pq

    # the 2-process checkpoint trains on in ONE process (tables and optimizer states 2 -> 1)
    on1 = _train1(tiny_data, f"run_dir={run}", "resume=auto", "trainer.max_steps=24")
    assert "resumed from" in on1.stderr and "step_20" in on1.stderr
    assert (run / "checkpoints" / "step_24" / "longseq.json").is_file()
    assert (
        json.loads((run / "checkpoints" / "step_24" / "longseq.json").read_text())["world_size"]
        == 1
    )

    preds = pq.read_table(out / "predictions.parquet")
    assert preds.num_rows == 2 * result["results"][0]["targets"]
    assert set(preds.column_names) >= {
        "request_id",
        "user_id",
        "target_index",
        "task",
        "window",
        "label",
        "score",
    }


def test_single_process_python_m(tiny_data: Path, tmp_path: Path) -> None:
    """`python -m longseq.train` runs the same code path with one process; one run checks the
    evaluation callback and the final evaluation of ``checkpoints/best``, the training metrics
    keys, TensorBoard's event file, one plain progress line per log step (stderr is a pipe), the
    start-up and closing lines, the sharding config recorded in the checkpoint, and the
    profiler's trace (steps 4-6)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run1"
    proc = _train1(
        tiny_data,
        f"run_dir={run}",
        "trainer.max_steps=8",
        "trainer.log_every=2",
        "trainer.checkpoint_every=4",
        "trainer.eval_every=4",
        "trainer.eval_at_end=true",
        "trainer.eval_windows=[100]",
        "trainer.tensorboard=true",
        "trainer.profile=true",
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == [2, 4, 6, 8]
    # the evaluation callback ran the offline evaluation on each checkpoint and logged it
    assert [r["step"] for r in records if "eval/auc/click@100" in r] == [4, 8]
    assert (run / "checkpoints" / "step_8" / "longseq.json").is_file()
    # the final evaluation scored checkpoints/best (picked on the test split here: the tiny data
    # has no valid split)
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    final = json.loads((run / "eval" / "eval.json").read_text())
    assert final["step"] == best["step"] and final["results"][0]["window"] == 100
    assert records[-1]["test/step"] == best["step"]
    assert (run / "eval" / "step_4" / "eval.json").is_file()
    for key in (
        "loss", "lr/dense", "lr/sparse", "grad_norm", "tokens_per_s", "targets_per_s",
        "requests_per_s", "mem/peak_rss_mib", "train/auc/click", "train/ne/click",
    ):  # fmt: skip
        assert key in train[-1], key
    assert train[-1]["grad_norm"] > 0 and train[-1]["mem/peak_rss_mib"] > 10
    assert 0 <= train[-1]["train/auc/click"] <= 1
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    loss = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert [s for s, _ in loss] == [2, 4, 6, 8]
    assert abs(loss[-1][1] - train[-1]["loss"]) < 1e-6
    assert "\r" not in proc.stderr  # no bar without a terminal
    assert "step 2/8 loss" in proc.stderr and "step 8/8 loss" in proc.stderr
    assert "world size 1" in proc.stderr and "sharding item=row_wise" in proc.stderr
    assert f"last checkpoint {run / 'checkpoints' / 'step_8'}" in proc.stderr
    meta = json.loads((run / "checkpoints" / "step_8" / "longseq.json").read_text())
    assert meta["sharding"]["tables"] == {"item": "row_wise"}
    traces = list((run / "profile").glob("trace_rank0_step*.json"))
    assert len(traces) == 1 and traces[0].stat().st_size > 10_000
    assert json.loads(traces[0].read_text())["traceEvents"]
    assert "profiler trace" in proc.stderr


def test_bad_data_path_names_the_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "longseq.train",
            "experiment=tiny",
            f"data.path={tmp_path}/nope",
            f"run_dir={tmp_path}/r",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "meta.json" in proc.stderr and "nope" in proc.stderr


def test_dry_run_plans_a_declared_cluster_without_one(tiny_data: Path, tmp_path: Path) -> None:
    """`dry_run=true` plans 2 nodes x 8 GPUs on this CPU box, prints the plan, trains nothing."""
    proc = _train1(
        tiny_data,
        f"run_dir={tmp_path}/never",
        "dry_run=true",
        "sharding.planner=true",
    )
    assert "2 nodes x 8 cuda" in proc.stdout
    assert "rank:15/cuda:7" in proc.stdout or "[0, 1, 2, 3, 4, 5, 6, 7, 8" in proc.stdout
    assert proc.stdout.count("| 15 |") == 1  # one memory line per rank of the 16
    assert not (tmp_path / "never").exists()
