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

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from two_agents import (  # noqa: E402
    assert_resumed_exactly,
    descendants,
    free_port,
    logged_steps,
    train_args,
)

pytestmark = pytest.mark.dist
BIN = Path(sys.executable).parent


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


def test_two_agents_train_lose_a_node_and_resume_exactly(tmp_path: Path, tiny_data: Path) -> None:
    run_dir = tmp_path / "run"
    args = train_args(tiny_data, run_dir)
    port = free_port()
    a, log_a = _agent(tmp_path, "node0", port, True, args)
    b, log_b = _agent(tmp_path, "node1", port, False, args)
    b2 = None
    latest = run_dir / "checkpoints" / "latest"
    logs = lambda: "\n".join(p.read_text() for p in tmp_path.glob("node*.log"))  # noqa: E731
    try:
        deadline = time.monotonic() + 120
        while not (latest.exists() and max(logged_steps(run_dir), default=0) >= 6):
            assert a.poll() is None and b.poll() is None, logs()
            assert time.monotonic() < deadline, logs()
            time.sleep(0.05)
        resume_from = latest.read_text().strip()
        workers = descendants(b.pid)  # torchrun starts workers in sessions of their own
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
    assert_resumed_exactly(run_dir, tiny_data, resume_from)
    assert log_b.exists()
