"""`make lint` covers every tracked Python file: ruff's file list equals `git ls-files '*.py'`.

Ruff's default exclusions drop any folder named ``dist``, ``build`` and the like (which once hid
``tests/dist``), and a bare pattern such as ``data`` in ``exclude`` matches ``longseq/data`` as
well as the top-level data folder (which once hid the input pipeline). This test catches both.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _ruff() -> str:
    exe = Path(sys.executable).with_name("ruff")
    return str(exe) if exe.exists() else (shutil.which("ruff") or "")


def test_ruff_sees_every_tracked_python_file():
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    ruff = _ruff()
    assert ruff, "ruff is pinned in requirements/lock-cpu.txt; run `make setup`"
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    shown = subprocess.run(
        [ruff, "check", "--show-files", "."], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    seen = {str(Path(p).resolve().relative_to(REPO)) for p in shown if p.endswith(".py")}
    missing = sorted(set(tracked) - seen)
    assert missing == [], f"ruff skips tracked files (see [tool.ruff] exclude): {missing[:20]}"
