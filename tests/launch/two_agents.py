"""Shared pieces of the two-agent ("two nodes on one host") launch tests: a free port, the
training arguments, the processes under an agent, and the check that a resumed run read
exactly what an uninterrupted one reads."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from longseq.data.reader import planned_requests

#: the run both tests launch: long enough that the kill lands mid-run
MAX_STEPS, BATCH, WORLD = 60, 8, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(tiny_data: Path, run_dir: Path) -> list[str]:
    """``python -m longseq.train`` overrides of the run (checkpoint every 4 steps)."""
    return [
        "experiment=tiny",
        f"data.path={tiny_data}",
        f"run_dir={run_dir}",
        f"trainer.max_steps={MAX_STEPS}",
        f"data.batch_size={BATCH}",
        "trainer.log_every=1",
        "trainer.checkpoint_every=4",
        "trainer.progress=false",
    ]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own, so
    killing an agent's process group leaves them running)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *descendants(kid)]
    return out


def logged_steps(run_dir: Path) -> list[int]:
    """Steps in ``metrics.jsonl`` so far."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return []
    return [json.loads(x)["step"] for x in metrics.read_text().splitlines() if x.strip()]


def assert_resumed_exactly(run_dir: Path, tiny_data: Path, resume_from: str) -> None:
    """The run finished, read exactly the planned requests, and logged every step after the
    checkpoint ``resume_from`` (``step_<n>``) once, in order."""
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == MAX_STEPS
    expected = planned_requests(tiny_data / "train", BATCH, WORLD, MAX_STEPS, shuffle_buffer=64)
    assert records[-1]["requests_seen"] == expected, records[-1]
    restart_at = int(resume_from.removeprefix("step_"))
    tail = [r["step"] for r in records[-(MAX_STEPS - restart_at) :]]
    assert tail == list(range(restart_at + 1, MAX_STEPS + 1)), [r["step"] for r in records]
    latest = run_dir / "checkpoints" / "latest"
    assert latest.read_text().strip() == f"step_{MAX_STEPS}"
