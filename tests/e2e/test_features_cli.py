"""End-to-end with side features: the generator's feature preset through the real CLIs (synth
-> 2-process torchrun training with feature tables sharded -> one-process, 2-process and sharded
evaluation, equal), and a resume that would drop the features is refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def _run(args: list[str], ok: bool = True, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if ok:
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _eval(ckpt: Path, data: Path, out: Path, *extra: str, nproc: int = 1) -> dict:
    head = [sys.executable] if nproc == 1 else [str(BIN / "torchrun"), f"--nproc-per-node={nproc}"]
    args = [f"checkpoint={ckpt}", f"data.path={data}", f"out={out}", "progress=false"]
    _run([*head, "-m", "longseq.eval", *args, "data.batch_size=8", *extra])
    return json.loads((out / "eval.json").read_text())


def test_features_train_and_evaluate_sharded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    synth = [sys.executable, "-m", "longseq.datasets.synth", "preset=tiny", f"out={data}"]
    _run([*synth, "seed=1", "features=true", "valid_fraction=0.1", "progress=false"])
    meta = json.loads((data / "meta.json").read_text())
    assert {f["side"] for f in meta["features"]} == {"user", "context", "candidate"}
    run = tmp_path / "run"
    train = [str(BIN / "torchrun"), "--nproc-per-node=2", "-m", "longseq.train"]
    common = [
        "experiment=tiny",
        f"data.path={data}",
        "trainer.progress=false",
        "model.head=rankmixer",
    ]
    tables = ["+sharding.tables.feat_creator=row_wise", "+sharding.tables.feat_age=table_wise"]
    proc = _run([*train, *common, *tables, f"run_dir={run}", "trainer.max_steps=10",
                 "trainer.checkpoint_every=10"])  # fmt: skip
    ckpt = run / "checkpoints" / "step_10"
    saved = json.loads((ckpt / "longseq.json").read_text())
    assert [f["name"] for f in saved["features"]] == [f["name"] for f in meta["features"]]
    assert "feat_creator" in proc.stderr + proc.stdout  # the start-up summary lists the tables

    one = _eval(ckpt, data, tmp_path / "e1")
    two = _eval(ckpt, data, tmp_path / "e2", nproc=2)
    sharded = _eval(ckpt, data, tmp_path / "e3", "sharded=true", nproc=2)
    assert one["results"] == two["results"] == sharded["results"]
    assert sharded["sharded"] is True and one["results"][0]["auc"] > 0.5

    # the model without its features is another model: resuming into it is refused, by name
    bad = _run([*train[:1], "--nproc-per-node=1", *train[2:], *common, f"run_dir={run}",
                "resume=auto", "trainer.max_steps=12", "model.use_features=false"], ok=False)  # fmt: skip
    assert bad.returncode != 0 and "features:" in bad.stderr, bad.stderr[-3000:]
