"""Quality regression: STCA must learn signals that sit only in the far past.

On `preset=farci` data (4,000 users, 256 events over 20 categories, interest events only older
than the newest 96), the recipe of `experiment=farci` trains for about a minute on 2 processes.
No model that sees only the last 96 events can pass the oracle's 96-event ceiling; STCA at the
full window must pass it by `MARGIN`, and DIN over the last 50 events, trained the same way,
must not (the check has power: a model without the far past fails the same threshold).

This guards every change to the model, data or trainer against silently breaking learning from
long histories. Fixed seeds; the margin is about a third of what the recipe reaches here
(docs/results.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
MARGIN = 0.01  #: STCA's AUC at 256 must beat the 96-event ceiling by this much
NOISE = 0.005  #: a short-window model may sit at most this far above the 96-event ceiling


def _run(args: list[str], timeout: int = 600) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def farci(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("farci") / "data"
    _run([sys.executable, "-m", "longseq.datasets.synth", "preset=farci", f"out={out}", "seed=0"])
    return out


def _train_eval(data: Path, run: Path, *overrides: str) -> dict[int, float]:
    """Train with `experiment=farci` on 2 processes, evaluate at 96 and 256: AUC per window."""
    _run(
        [
            str(BIN / "torchrun"),
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "longseq.train",
            "experiment=farci",
            f"data.path={data}",
            f"run_dir={run}",
            "trainer.progress=false",
            *overrides,
        ]
    )
    out = run / "eval"
    _run(
        [
            sys.executable,
            "-m",
            "longseq.eval",
            f"checkpoint={run}",
            f"data.path={data}",
            f"out={out}",
            "windows=[96,256]",
            "progress=false",
        ]
    )
    rows = json.loads((out / "eval.json").read_text())["results"]
    return {r["window"]: r["auc"] for r in rows if r["task"] == "click"}


def _ceiling(data: Path, window: int) -> float:
    rows = json.loads((data / "oracle.json").read_text())["windows"]
    return next(r["auc"] for r in rows if r["window"] == window)


def test_stca_learns_the_far_past_and_a_short_window_model_does_not(farci: Path, tmp_path: Path):
    recent = _ceiling(farci, 96)
    assert _ceiling(farci, 256) > recent + 0.05  # the data has far-past signal to learn
    stca = _train_eval(farci, tmp_path / "stca")
    assert stca[256] > recent + MARGIN, (stca, recent)
    assert stca[256] > stca[96] + MARGIN  # it is the far past that helps
    din = _train_eval(farci, tmp_path / "din", "model.tower=din", "model.din.last_n=50")
    assert din[256] < recent + NOISE, (din, recent)
    assert stca[256] > din[256] + MARGIN
