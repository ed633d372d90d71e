"""Two nodes for real: two torchrun agents on this host rendezvous over c10d, train and
checkpoint; one node (its agent and its worker) is killed mid-run, the other node's worker fails
on the broken collective and the job ends; both nodes are launched again with ``resume=auto``
and the job resumes from ``latest`` with exactly the requests an uninterrupted run reads (none
lost, none repeated).

Both "nodes" are agents on 127.0.0.1 with one worker each (``--nnodes 2 --nproc-per-node 1``);
what this host cannot show is traffic between machines. Not covered here: the surviving node's
agent restarting its workers in place when a new agent for the lost node joins
(``--max-restarts``); that is tests/launch/test_elastic_rejoin.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longseq.data.reader import planned_requests

pytestmark = pytest.mark.dist
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent(
    tmp_path: Path, name: str, port: int, host: bool, args: list[str]
) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [
        str(BIN / "torchrun"),
        "--nnodes", "2",
        "--nproc-per-node", "1",
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", f"127.0.0.1:{port}",
        "--rdzv-id", "two-nodes",
        "--rdzv-conf", f"is_host={str(host).lower()},join_timeout=90",
        "--max-restarts", "0",
        "-m", "longseq.train", *args,
    ]  # fmt: skip
    with log.open("w") as f:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True
        )
    return proc, log


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *_descendants(kid)]
    return out


def _steps(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    return [json.loads(x)["step"] for x in metrics.read_text().splitlines() if x.strip()]


def test_two_agents_train_lose_a_node_and_resume_exactly(tmp_path: Path, tiny_data: Path) -> None:
    run_dir = tmp_path / "run"
    max_steps, batch, world = 60, 8, 2  # long enough that the kill lands mid-run
    args = [
        "experiment=tiny",
        f"data.path={tiny_data}",
        f"run_dir={run_dir}",
        f"trainer.max_steps={max_steps}",
        f"data.batch_size={batch}",
        "trainer.log_every=1",
        "trainer.checkpoint_every=4",
        "trainer.progress=false",
    ]
    port = _free_port()
    a, log_a = _agent(tmp_path, "node0", port, True, args)
    b, log_b = _agent(tmp_path, "node1", port, False, args)
    b2 = None
    latest = run_dir / "checkpoints" / "latest"
    logs = lambda: "\n".join(p.read_text() for p in tmp_path.glob("node*.log"))  # noqa: E731
    try:
        deadline = time.monotonic() + 120
        while not (latest.exists() and max(_steps(run_dir / "metrics.jsonl"), default=0) >= 6):
            assert a.poll() is None and b.poll() is None, logs()
            assert time.monotonic() < deadline, logs()
            time.sleep(0.05)
        resume_from = latest.read_text().strip()
        workers = _descendants(b.pid)  # torchrun starts workers in sessions of their own
        assert workers, logs()
        for pid in [b.pid, *workers]:  # node 1 is gone: its agent and its worker
            os.kill(pid, signal.SIGKILL)
        b.wait(timeout=30)
        assert a.wait(timeout=120) != 0, logs()  # the job is down: node 0's worker failed
        a, log_a = _agent(tmp_path, "node0b", port, True, [*args, "resume=auto"])
        b2, _ = _agent(tmp_path, "node1b", port, False, [*args, "resume=auto"])
        assert a.wait(timeout=180) == 0, logs()
        assert b2.wait(timeout=60) == 0, logs()
    finally:
        for p in (a, b, b2):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    out = log_a.read_text()
    assert f"resumed from {run_dir / 'checkpoints' / resume_from}" in out, logs()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == max_steps
    expected = planned_requests(tiny_data / "train", batch, world, max_steps, shuffle_buffer=64)
    assert records[-1]["requests_seen"] == expected, records[-1]
    restart_at = int(resume_from.removeprefix("step_"))
    tail = [r["step"] for r in records[-(max_steps - restart_at) :]]
    assert tail == list(range(restart_at + 1, max_steps + 1)), [r["step"] for r in records]
    assert latest.read_text().strip() == f"step_{max_steps}"
    assert log_b.exists()
