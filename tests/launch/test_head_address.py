"""The shell side of the launchers, without a cluster.

* launch/slurm/common.sh: the head-address choice (the localhost trap), with canned
  `hostname` output and a stand-in `srun`; python discovery; the rendezvous port.
* launch/torchrun.sh: the torchrun command it builds (DRY_RUN=1), and a real elastic restart
  through it (the trainer on 2 processes, one worker killed mid-run).
* shellcheck over every launch script.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_cluster import require_tool

from longseq.data.reader import planned_requests

REPO = Path(__file__).resolve().parents[2]
COMMON = REPO / "launch/slurm/common.sh"
TORCHRUN_SH = REPO / "launch/torchrun.sh"


def bash(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    for key in ("HEAD_ADDR", "RDZV_PORT", "LONGSEQ_PYTHON", "VENV", "LONGSEQ_ALLOW_LOOPBACK_HEAD"):
        full_env.pop(key, None)
    full_env.update(env or {})
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . "{COMMON}"; {script}'],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=30,
    )


def select(nnodes: int, ip_out: str, all_out: str = "", **env: str):
    return bash(f'longseq_select_head_addr {nnodes} "{ip_out}" "{all_out}"', env=env)


@pytest.mark.parametrize(
    ("nnodes", "ip_out", "all_out", "expected"),
    [
        (1, "127.0.1.1", "", "127.0.1.1"),  # one node: loopback is fine
        (1, "127.0.0.1 10.1.2.3", "", "10.1.2.3"),
        (2, "10.1.2.3", "", "10.1.2.3"),
        (2, "10.1.2.3 10.9.9.9", "", "10.1.2.3"),
        (4, "127.0.1.1", "10.1.2.3 172.17.0.1", "10.1.2.3"),  # Debian /etc/hosts trap
        (2, "127.0.1.1 fe80::1", "169.254.3.3 fe80::2 192.168.7.8", "192.168.7.8"),
        (2, "::1 127.0.0.1 10.0.0.5", "", "10.0.0.5"),
    ],
)
def test_select_head_addr(nnodes: int, ip_out: str, all_out: str, expected: str) -> None:
    res = select(nnodes, ip_out, all_out)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == expected


@pytest.mark.parametrize(
    ("ip_out", "all_out"),
    [("127.0.1.1", ""), ("127.0.1.1", "127.0.0.1 169.254.1.1 fe80::1"), ("", "10.0.0.1")],
)
def test_select_head_addr_refuses_loopback_on_many_nodes(ip_out: str, all_out: str) -> None:
    res = select(2, ip_out, all_out)
    assert res.returncode != 0, res.stdout
    assert res.stdout.strip() == ""
    assert "HEAD_ADDR" in res.stderr or "printed nothing" in res.stderr, res.stderr


def test_select_head_addr_loopback_override() -> None:
    res = select(2, "127.0.0.1", "", LONGSEQ_ALLOW_LOOPBACK_HEAD="1")
    assert res.returncode == 0 and res.stdout.strip() == "127.0.0.1", res.stderr


@pytest.fixture()
def fake_srun(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A `srun` that records its arguments and answers `hostname` from IP_OUT / ALL_OUT."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "srun.log"
    (bindir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{log}"\n'
        'case "$*" in\n'
        '  *--all-ip-addresses*) echo "$ALL_OUT" ;;\n'
        '  *--ip-address*) echo "$IP_OUT" ;;\n'
        "  *) exit 3 ;;\n"
        "esac\n"
    )
    (bindir / "srun").chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, log


def test_resolve_asks_the_head_node(fake_srun: tuple[dict[str, str], Path]) -> None:
    env, log = fake_srun
    res = bash(
        "longseq_resolve_head_addr gpu-007 2",
        env={**env, "IP_OUT": "127.0.1.1", "ALL_OUT": "10.20.30.40 172.17.0.1"},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "10.20.30.40"
    calls = log.read_text().splitlines()
    assert len(calls) == 2, calls
    for call in calls:
        assert "--nodes=1" in call and "--ntasks=1" in call and "-w gpu-007" in call, call
    assert calls[0].endswith("hostname --ip-address")
    assert calls[1].endswith("hostname --all-ip-addresses")


def test_resolve_single_node_does_not_need_more(fake_srun: tuple[dict[str, str], Path]) -> None:
    env, log = fake_srun
    res = bash("longseq_resolve_head_addr node1 1", env={**env, "IP_OUT": "127.0.1.1"})
    assert res.returncode == 0 and res.stdout.strip() == "127.0.1.1", res.stderr
    assert len(log.read_text().splitlines()) == 1


def test_resolve_fails_loudly(fake_srun: tuple[dict[str, str], Path]) -> None:
    env, _ = fake_srun
    res = bash(
        "longseq_resolve_head_addr node1 3",
        env={**env, "IP_OUT": "127.0.1.1", "ALL_OUT": "127.0.1.1"},
    )
    assert res.returncode != 0
    assert "Set HEAD_ADDR" in res.stderr


def test_head_addr_override_skips_srun(fake_srun: tuple[dict[str, str], Path]) -> None:
    env, log = fake_srun
    res = bash("longseq_resolve_head_addr node1 8", env={**env, "HEAD_ADDR": "10.0.0.9"})
    assert res.returncode == 0 and res.stdout.strip() == "10.0.0.9"
    assert not log.exists()


def test_find_python_precedence(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".venv/bin").mkdir(parents=True)
    (root / ".venv/bin/python").write_text("#!/bin/sh\n")
    (root / ".venv/bin/python").chmod(0o755)

    def find(**env: str) -> str:
        res = bash(f'longseq_find_python "{root}"', env=env)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    assert find(LONGSEQ_PYTHON="/opt/py/bin/python3", VENV="/v") == "/opt/py/bin/python3"
    assert find(VENV="/v") == "/v/bin/python"
    assert find() == f"{root}/.venv/bin/python"
    (root / ".venv/bin/python").unlink()
    assert find() == shutil.which("python3")


def test_rdzv_port() -> None:
    assert bash("longseq_rdzv_port 123456").stdout.strip() == "29956"
    assert bash("longseq_rdzv_port 7", env={"RDZV_PORT": "40000"}).stdout.strip() == "40000"


# -- launch/torchrun.sh -------------------------------------------------------------------------


def torchrun_sh(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    for key in ("NNODES", "RDZV_ENDPOINT", "MASTER_ADDR", "NPROC_PER_NODE", "LOCAL_ADDR"):
        full_env.pop(key, None)
    full_env.update({"DRY_RUN": "1", "PYTHON": "py", "NPROC_PER_NODE": "2", **env})
    return subprocess.run(
        ["bash", str(TORCHRUN_SH), *args], capture_output=True, text=True, env=full_env, timeout=30
    )


def test_torchrun_sh_single_node() -> None:
    res = torchrun_sh("experiment=tiny", "data.path=/d x")
    assert res.returncode == 0, res.stderr
    cmd = shlex.split(res.stdout)
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and "--rdzv-endpoint" not in cmd
    assert cmd[cmd.index("--nproc-per-node") + 1] == "2"
    assert cmd[cmd.index("--max-restarts") + 1] == "0"
    assert "SIGUSR1" in cmd[cmd.index("--signals-to-handle") + 1]
    tail = cmd[cmd.index("-m", 3) :]
    assert tail == ["-m", "longseq.train", "experiment=tiny", "data.path=/d x", "resume=auto"]


def test_torchrun_sh_multi_node() -> None:
    res = torchrun_sh(
        "resume=none",
        NNODES="2",
        RDZV_ENDPOINT="10.0.0.1:29600",
        RDZV_ID="j42",
        MAX_RESTARTS="3",
        LOCAL_ADDR="10.0.0.2",
    )
    assert res.returncode == 0, res.stderr
    cmd = res.stdout.split()
    assert "--standalone" not in cmd
    for flag, value in [
        ("--nnodes", "2"),
        ("--rdzv-backend", "c10d"),
        ("--rdzv-endpoint", "10.0.0.1:29600"),
        ("--rdzv-id", "j42"),
        ("--max-restarts", "3"),
        ("--local-addr", "10.0.0.2"),
    ]:
        assert cmd[cmd.index(flag) + 1] == value, (flag, cmd)
    assert cmd.count("resume=none") == 1 and "resume=auto" not in cmd  # the user's wins


def test_torchrun_sh_multi_node_needs_endpoint() -> None:
    res = torchrun_sh(NNODES="2")
    assert res.returncode == 2
    assert "RDZV_ENDPOINT" in res.stderr
    res = torchrun_sh(NNODES="2", MASTER_ADDR="10.0.0.1")
    assert res.returncode == 0 and "10.0.0.1:29500" in res.stdout


def test_torchrun_sh_eval_module_gets_no_resume() -> None:
    res = torchrun_sh("checkpoint=/r/checkpoints/step_4", LONGSEQ_MODULE="longseq.eval")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-3:] == ["-m", "longseq.eval", "checkpoint=/r/checkpoints/step_4"]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.dist
@pytest.mark.skipif(
    not (REPO / "longseq/train/__main__.py").exists(), reason="the trainer has not landed"
)
def test_elastic_restart_resumes_from_latest_checkpoint(tmp_path: Path, tiny_data: Path) -> None:
    """launch/torchrun.sh with MAX_RESTARTS=1, one of 2 workers SIGKILLed mid-training: torchrun
    restarts the group, which resumes from the latest complete checkpoint and finishes; the
    requests trained on equal the plan (steps x batch x ranks: none lost, none repeated)."""
    import signal
    import time

    run_dir = tmp_path / "run"
    max_steps, batch, world = 12, 8, 2
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "NPROC_PER_NODE": str(world),
        "MAX_RESTARTS": "1",
        "OMP_NUM_THREADS": "1",
    }
    for key in ("NNODES", "RDZV_ENDPOINT", "MASTER_ADDR", "LOCAL_ADDR", "DRY_RUN", "RESUME"):
        env.pop(key, None)
    log = (tmp_path / "log.txt").open("w")
    proc = subprocess.Popen(
        [
            "bash",
            str(TORCHRUN_SH),
            "experiment=tiny",
            f"data.path={tiny_data}",
            f"run_dir={run_dir}",
            f"trainer.max_steps={max_steps}",
            f"data.batch_size={batch}",
            "trainer.log_every=1",
            "trainer.checkpoint_every=4",
            "trainer.progress=false",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    metrics = run_dir / "metrics.jsonl"
    latest = run_dir / "checkpoints" / "latest"
    try:
        deadline = time.monotonic() + 90
        while True:  # past the step-4 checkpoint, before the end
            steps = (
                [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
                if (metrics.exists())
                else []
            )
            if latest.exists() and steps and max(steps) >= 6:
                break
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()
            assert time.monotonic() < deadline, (tmp_path / "log.txt").read_text()
            time.sleep(0.05)
        workers = [c for c in _children(proc.pid) if "longseq.train" in _cmdline(c)]
        assert len(workers) == world, (workers, [_cmdline(c) for c in _children(proc.pid)])
        resume_from = latest.read_text().strip()
        os.kill(workers[-1], signal.SIGKILL)
        assert proc.wait(timeout=120) == 0, (tmp_path / "log.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    out = (tmp_path / "log.txt").read_text()
    assert "restart" in out.lower(), out
    assert f"resumed from {run_dir / 'checkpoints' / resume_from}" in out, out
    records = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert records[-1]["step"] == max_steps
    # every rank consumed exactly its first max_steps batches: none lost or repeated
    expected = planned_requests(tiny_data / "train", batch, world, max_steps, shuffle_buffer=64)
    assert records[-1]["requests_seen"] == expected, records[-1]
    # after the restart the steps continue right after the checkpoint
    restart_at = int(resume_from.removeprefix("step_"))
    tail = [r["step"] for r in records[-(max_steps - restart_at) :]]
    assert tail == list(range(restart_at + 1, max_steps + 1)), [r["step"] for r in records]
    assert latest.read_text().strip() == f"step_{max_steps}"


def test_shellcheck_launch_scripts() -> None:
    require_tool(shutil.which("shellcheck") is not None, "shellcheck is not installed")
    scripts = sorted(
        [
            *REPO.glob("launch/**/*.sh"),
            *REPO.glob("launch/**/*.sbatch"),
            REPO / ".ci/install-slurm.sh",
        ]
    )
    assert len(scripts) >= 5, scripts
    res = subprocess.run(
        ["shellcheck", "-x", "--shell=bash", *map(str, scripts)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert res.returncode == 0, res.stdout + res.stderr
