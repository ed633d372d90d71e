"""Elastic membership for real: a lost node comes back and the job heals in place.

Two ``launch/torchrun.sh`` agents (``NNODES=2 MAX_RESTARTS=1``, one worker each, c10d rendezvous
on 127.0.0.1) train together and checkpoint. Node 1 (its agent and its worker) is SIGKILLed; node
0's worker fails on the broken collective, and node 0's agent, which the test never touches,
spends one restart and goes back into the rendezvous. A *new* agent for node 1 is started with
the same command; after the dead agent's keep-alive expires (5 s x 3 by default) the two form the
next round, the workers resume from ``latest``, and the finished run has read exactly the
requests an uninterrupted run reads.

This works because ``torchrun.sh`` sets ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``. With torch's
default (the workers share the agent's store) the new round forms, then the rejoining agent
waits for the round's ``MASTER_ADDR``, which node 0's agent never writes, while node 0's agent
waits for the new agent's ``torchelastic/role_info/1``; both time out after 60 s (docs/launch.md,
"A lost node rejoins").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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
TORCHRUN_SH = Path(__file__).resolve().parents[2] / "launch" / "torchrun.sh"


def _agent(tmp_path: Path, name: str, port: int, args: list[str]) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "NNODES": "2",
        "NPROC_PER_NODE": "1",
        "RDZV_ENDPOINT": f"127.0.0.1:{port}",
        "RDZV_ID": "rejoin",
        "RDZV_JOIN_TIMEOUT": "120",
        "MAX_RESTARTS": "1",
        "LOCAL_ADDR": "127.0.0.1",
        "LOGLEVEL": "INFO",  # the agents' rendezvous and restart lines, polled below
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "disabled",
    }
    for key in ("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "MASTER_ADDR", "DRY_RUN", "RESUME"):
        env.pop(key, None)  # the launcher's own defaults are what is tested
    with (tmp_path / f"{name}.log").open("w") as f:  # the child keeps its own descriptor
        return subprocess.Popen(
            ["bash", str(TORCHRUN_SH), *args],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )


def _until(cond: Callable[[], bool], timeout: float, alive: list[subprocess.Popen], logs) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert all(p.poll() is None for p in alive), logs()
        assert time.monotonic() < deadline, logs()
        time.sleep(0.05)


def test_lost_node_rejoins_and_the_job_heals_in_place(tmp_path: Path, tiny_data: Path) -> None:
    run_dir = tmp_path / "run"
    args = train_args(tiny_data, run_dir)  # torchrun.sh appends resume=auto
    port = free_port()
    log_a, log_b = tmp_path / "node0.log", tmp_path / "node1.log"
    logs = lambda: "\n".join(  # noqa: E731
        f"===== {p.name}\n{p.read_text()}" for p in sorted(tmp_path.glob("node*.log"))
    )
    a = _agent(tmp_path, "node0", port, args)
    procs = [a]
    try:
        # node 0's agent must host the rendezvous store: the loopback endpoint is "this host" to
        # both agents, the first to bind it hosts it and the other connects. The agent creates
        # the store before its first rendezvous, so node 1 starts once that is logged.
        _until(lambda: "Rendezvous'ing worker group" in log_a.read_text(), 60, [a], logs)
        b = _agent(tmp_path, "node1", port, args)
        procs.append(b)
        latest = run_dir / "checkpoints" / "latest"
        steps = lambda: max(logged_steps(run_dir), default=0)  # noqa: E731
        _until(lambda: latest.exists() and steps() >= 6, 120, procs, logs)

        workers = descendants(b.pid)  # torchrun starts workers in sessions of their own
        assert workers, logs()
        for pid in [b.pid, *workers]:  # node 1 is gone: its agent and its worker
            os.kill(pid, signal.SIGKILL)
        b.wait(timeout=30)

        # node 0's worker fails on the broken collective; its agent restarts the group in place
        _until(lambda: "will restart worker group" in log_a.read_text(), 60, [a], logs)
        resume_from = latest.read_text().strip()  # no worker is alive: this is final
        b2 = _agent(tmp_path, "node1b", port, args)  # the node comes back: a new agent
        procs.append(b2)
        assert a.wait(timeout=150) == 0, logs()
        assert b2.wait(timeout=60) == 0, logs()
    finally:
        for p in procs:
            if p.poll() is None:
                for pid in [*descendants(p.pid), p.pid]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                p.wait(timeout=30)

    out_a, out_b2 = log_a.read_text(), (tmp_path / "node1b.log").read_text()
    assert "Rendezvous complete for workers" in log_b.read_text(), logs()  # it was in round 0
    # node 0's one agent process did both rounds: round 0 and the restarted group
    assert out_a.count("Rendezvous complete for workers") == 2, logs()
    assert "restart_count=1" in out_a and "restart_count=0" in out_b2, logs()
    assert "group_world_size=2" in out_b2, logs()
    assert f"resumed from {run_dir / 'checkpoints' / resume_from}" in out_a + out_b2, logs()
    assert_resumed_exactly(run_dir, tiny_data, resume_from)
