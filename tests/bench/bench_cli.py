"""The benchmark CLI as the tests call it (one thread, from the repository root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
#: repetitions of the tiny run
REPS = 2


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m longseq.bench <args>`` in the repository, one thread."""
    return subprocess.run(
        [sys.executable, "-m", "longseq.bench", *args],
        capture_output=True, text=True, cwd=REPO, env=ENV, timeout=timeout,
    )  # fmt: skip


def load(out: Path, suite: str) -> dict[str, Any]:
    """``<out>/<suite>.json``."""
    return json.loads((out / f"{suite}.json").read_text())
