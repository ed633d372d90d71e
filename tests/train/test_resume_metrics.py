"""The metrics a resumed run logs are the uninterrupted run's: the first row after a resume
included (issue 25: its ``grad_norm`` averaged in the zero-gradient optimizer step that creates
the optimizer states on resume, 2/3 of the true value at ``log_every=2``). One process, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def _train(data: Path, run: Path, steps: int, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    args = [
        sys.executable, "-m", "longseq.train", "experiment=tiny", f"data.path={data}",
        f"run_dir={run}", f"trainer.max_steps={steps}", "trainer.log_every=2",
        "trainer.checkpoint_every=2", "trainer.progress=false", "trainer.metrics_window=0", *extra,
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


def test_first_row_after_resume_matches_the_uninterrupted_run(tiny_data: Path, tmp_path: Path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(tiny_data, straight, 4)
    _train(tiny_data, resumed, 2)
    _train(tiny_data, resumed, 4, "resume=auto")
    a, b = _rows(straight), _rows(resumed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 4]
    for key in ("grad_norm", "loss", "requests_seen", "input_ids_per_target"):
        assert b[1][key] == pytest.approx(a[1][key], rel=1e-6), key
    assert b[1]["grad_norm"] > 0
