"""Resume is exact: k steps + resume + k steps == 2k uninterrupted steps (weights and requests),
and the pipelined loop computes the same weights as the plain one. 2 processes, gloo, CPU.
Also: a 1-process run resumes on 2 processes (1 -> 2 reshard) with FSDP2, activation
checkpointing and bf16 autocast switched on through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longseq.eval.load import load_model

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def _train(data: Path, run: Path, steps: int, *extra: str, nproc: int = 2) -> str:
    """Train with ``nproc`` processes (torchrun; ``python -m`` for 1); returns stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    launch = [str(BIN / "torchrun"), "--nproc-per-node", str(nproc), "-m"]
    args = [
        *(launch if nproc > 1 else [sys.executable, "-m"]),
        "longseq.train",
        "experiment=tiny",
        f"data.path={data}",
        f"run_dir={run}",
        f"trainer.max_steps={steps}",
        "trainer.checkpoint_every=4",
        "trainer.log_every=4",
        "trainer.progress=false",
        *extra,
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def _weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    ckpt = run / "checkpoints" / f"step_{step}"
    return load_model(ckpt, json.loads((ckpt / "longseq.json").read_text())).state_dict()


def _seen(run: Path) -> list[int]:
    return [json.loads(x)["requests_seen"] for x in (run / "metrics.jsonl").open()]


def test_resume_and_pipeline_change_nothing(tiny_data: Path, tmp_path: Path) -> None:
    straight, resumed, plain = tmp_path / "straight", tmp_path / "resumed", tmp_path / "plain"
    _train(tiny_data, straight, 8)
    _train(tiny_data, resumed, 4)
    _train(tiny_data, resumed, 8, "resume=auto")
    _train(tiny_data, plain, 8, "trainer.pipeline=false")

    assert _seen(resumed) == _seen(straight)  # the same requests, none lost or repeated
    a, b, c = _weights(straight, 8), _weights(resumed, 8), _weights(plain, 8)
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=f"resume changed {k}")
        torch.testing.assert_close(c[k], a[k], rtol=0, atol=1e-6, msg=f"pipeline changed {k}")
    # and training moved the weights at all (the comparison is not between two initialisations)
    init = _weights(resumed, 4)
    assert any(not torch.allclose(init[k], a[k]) for k in a)


def test_one_process_run_resumes_on_two_with_fsdp2_ac_bf16(tiny_data: Path, tmp_path: Path):
    run = tmp_path / "run"
    _train(tiny_data, run, 4, nproc=1)
    extra = ("sharding.dense=fsdp2", "trainer.activation_checkpointing=stca_layers")
    err = _train(tiny_data, run, 8, "resume=auto", *extra, "trainer.precision=bf16")
    assert "resumed from" in err and "at step 4" in err
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").open()] == [4, 8]
    meta = json.loads((run / "checkpoints" / "step_8" / "longseq.json").read_text())
    assert meta["world_size"] == 2
    before, after = _weights(run, 4), _weights(run, 8)
    assert before.keys() == after.keys()
    assert not torch.equal(before["interaction.tower.out_proj.weight"],
                           after["interaction.tower.out_proj.weight"])  # fmt: skip
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").open()]
    assert all(0 < x < 2 for x in losses)
