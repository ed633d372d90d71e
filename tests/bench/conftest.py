"""The tiny run the benchmark tests read: every suite through the real CLI, once a session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench.bench_cli import REPS, cli


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every suite through the real CLI, tiny shapes, into ``<tmp>/results/cpu``."""
    out = tmp_path_factory.mktemp("bench") / "results" / "cpu"
    proc = cli("suite=all", "quick=true", "device=cpu", f"out={out}", "tiny=true",
               f"reps={REPS}", "warmup=1", timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out
