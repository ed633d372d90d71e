"""End-to-end on a converted public-log layout: KuaiRand fixture files -> ``python -m
longseq.datasets.convert`` -> ``python -m longseq.datasets.validate`` -> ``python -m longseq.train
experiment=kuairand_pure`` (shrunken model, a few steps) -> ``python -m longseq.eval`` on the
time-split test and on the random-exposure split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets" / "convert"))
from raw_fixtures import write_kuairand  # noqa: E402

pytestmark = pytest.mark.e2e

SMALL_MODEL = [
    "model.embedding_dim=16",
    "model.pos_dim=8",
    "model.stca.d_model=32",
    "model.stca.num_heads=2",
    "model.stca.num_layers=1",
    "model.head_hidden=[16]",
    "data.batch_size=8",
    "data.shuffle_buffer=32",
]


def _run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_convert_train_evaluate_kuairand(tmp_path: Path) -> None:
    write_kuairand(tmp_path / "raw", "pure", users=6)
    data = tmp_path / "data"
    py = sys.executable
    conv = _run([py, "-m", "longseq.datasets.convert", "dataset=kuairand", f"src={tmp_path / 'raw'}",
                 f"out={data}", "kuairand.gap_s=300", "progress=false"])  # fmt: skip
    assert "converted kuairand" in conv.stdout
    assert (
        "OK"
        in _run([py, "-m", "longseq.datasets.validate", f"path={data}", "progress=false"]).stdout
    )
    meta = json.loads((data / "meta.json").read_text())

    run = tmp_path / "run"
    _run([py, "-m", "longseq.train", "experiment=kuairand_pure", f"data.path={data}", f"run_dir={run}",
          "trainer.max_steps=4", "trainer.log_every=2", "trainer.checkpoint_every=2",
          "trainer.eval_windows=[16]", "trainer.progress=false", *SMALL_MODEL])  # fmt: skip
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    assert all(r["loss"] > 0 for r in records if "loss" in r)
    assert "test/auc/is_click@16" in records[-1]  # eval at end (of best, on test), all tasks
    assert "test/auc/is_like@16" in records[-1]

    for split in ("test", "test_random"):
        out = tmp_path / f"eval_{split}"
        proc = _run([py, "-m", "longseq.eval", f"checkpoint={run}", f"data.path={data}",
                     f"data.split={split}", f"out={out}", "windows=[8,64]", "progress=false"])  # fmt: skip
        assert "| window |" in proc.stdout
        result = json.loads((out / "eval.json").read_text())
        assert result["step"] == 4 and result["tasks"] == ["is_click", "long_view", "is_like"]
        assert sorted({r["window"] for r in result["results"]}) == [8, 64]
        for r in result["results"]:
            assert r["requests"] == meta["num_requests"][split] > 0
            assert r["served_len_max"] <= r["window"]
