"""Fixtures for the launch tests: a real local Slurm, the repository, a sanitized job PATH.

Slurm tests (``@pytest.mark.slurm``) skip with a reason when Slurm is not installed, except under
``CI=true``, where a missing Slurm fails them (CI installs it with ``.ci/install-slurm.sh``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from slurm_cluster import SlurmCluster, require_slurm  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: starts a real local Slurm (slurmctld + slurmd)")
    config.addinivalue_line("markers", "k8s: offline Kubernetes / PyTorchJob schema validation")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    """A one-node Slurm ('localhost', all CPUs), shared by the session's Slurm tests."""
    require_slurm()
    with SlurmCluster(nodes=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def job_path() -> str:
    """PATH for jobs without any virtual environment on it: the scripts must find Python alone."""
    venv_bin = str(Path(sys.executable).parent)
    keep = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    if os.environ.get("VIRTUAL_ENV"):
        keep = [p for p in keep if not p.startswith(os.environ["VIRTUAL_ENV"])]
    for p in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        if p not in keep:
            keep.append(p)
    return os.pathsep.join(keep)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic data set, made once per session with the real CLI."""
    if not (REPO / "longseq/datasets/synth.py").exists():
        pytest.skip("longseq.datasets.synth is not there yet")
    out = tmp_path_factory.mktemp("tiny") / "data"
    subprocess.run(
        [sys.executable, "-m", "longseq.datasets.synth", "preset=tiny", f"out={out}", "seed=1"],
        check=True,
        cwd=REPO,
        timeout=120,
        capture_output=True,
    )
    return out
