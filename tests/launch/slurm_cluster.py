"""A real, throw-away Slurm on this host, for tests.

Starts Debian's ``slurmctld`` and one ``slurmd`` per emulated node in the foreground under their
own sessions, on a private ``slurm.conf`` whose state, spool, pid and log files all live in one
temporary folder, and stops exactly those daemon PIDs again. Every client call goes through
:attr:`SlurmCluster.env` (``SLURM_CONF`` points at the private config; ``sbatch`` passes it on to
the job). Comments in `write_conf` say why each slurm.conf line is there.

Usage::

    with SlurmCluster(nodes=2) as cluster:
        job = cluster.submit("launch/slurm/train.sbatch", {"DATA": "...", "RUN_DIR": "..."})
        result = cluster.wait(job, timeout=120)
        assert result.state == "COMPLETED", result.describe()

Note: ``srun`` may exit 0 even where a step failed on this kind of machine (no cgroup tracker):
tests check the job's output and files, not only exit codes.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: Job states after which a job does not run again by itself.
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)

REQUIRED_BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "sinfo")


def missing_binaries() -> list[str]:
    """The Slurm programs this harness needs that are not on PATH (or in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [b for b in REQUIRED_BINARIES if shutil.which(b, path=path) is None]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_tool(available: bool, reason: str) -> None:
    """In a pytest test: skip when a tool is missing; under CI=true, fail instead."""
    import pytest

    if available:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the CI setup must install it)")
    pytest.skip(reason)


def require_slurm() -> None:
    """Skip (fail under CI=true) unless the Slurm daemons and clients are installed."""
    missing = missing_binaries()
    require_tool(
        not missing,
        f"Slurm is not installed (missing: {', '.join(missing)}); run .ci/install-slurm.sh",
    )


def _which(binary: str) -> str:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(binary, path=path)
    if found is None:
        raise FileNotFoundError(f"{binary} not found (install with .ci/install-slurm.sh)")
    return found


def _free_port_block(count: int, start: int = 20000, stop: int = 40000) -> int:
    """First port ``p`` such that ``p .. p+count-1`` can all be bound on 127.0.0.1 right now."""
    rng_start = start + (os.getpid() * 7) % (stop - start - count)
    for base in list(range(rng_start, stop - count)) + list(range(start, rng_start)):
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block found")


def _mem_total_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 4096


@dataclasses.dataclass
class JobResult:
    """A job's final (or last seen) state, from ``scontrol show job``."""

    job_id: int
    state: str
    exit_code: int
    signal: int
    restarts: int
    stdout_path: str | None
    info: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED" and self.exit_code == 0

    def output(self) -> str:
        """The job's stdout file (the batch script's and its steps' output), '' if none."""
        if self.stdout_path and os.path.exists(self.stdout_path):
            return Path(self.stdout_path).read_text(errors="replace")
        return ""

    def describe(self, tail: int = 4000) -> str:
        out = self.output()
        return (
            f"job {self.job_id}: state={self.state} exit={self.exit_code}:{self.signal} "
            f"restarts={self.restarts} reason={self.info.get('Reason')}\n"
            f"--- output ({self.stdout_path}) ---\n{out[-tail:]}"
        )


class SlurmCluster:
    """A single-host Slurm: ``slurmctld`` plus ``nodes`` emulated ``slurmd`` (all 127.0.0.1)."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        nodes: int = 1,
        cpus: int | None = None,
        partition: str = "debug",
    ) -> None:
        # Short path on purpose: slurmstepd puts unix sockets in the spool dir (108-byte limit).
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="slurm-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.nodes = nodes
        self.cpus = cpus or os.cpu_count() or 1
        self.partition = partition
        self.node_names = ["localhost"] if nodes == 1 else [f"n{i}" for i in range(1, nodes + 1)]
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ)
        self.env["SLURM_CONF"] = str(self.conf)
        for key in list(self.env):  # a surrounding job's variables would confuse the clients
            if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and key != "SLURM_CONF":
                del self.env[key]
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[object] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def write_conf(self) -> None:
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir(exist_ok=True)
        for name in self.node_names:
            (r / "spool" / name).mkdir(exist_ok=True)
        (r / "plugstack.conf").write_text("")
        user = getpass.getuser()
        ctld_port = _free_port_block(1)
        node_port = _free_port_block(self.nodes, start=ctld_port + 1)
        mem = max(256, int(_mem_total_mb() * 0.9))
        if self.nodes == 1:
            node_line = (
                f"NodeName=localhost NodeAddr=127.0.0.1 Port={node_port} CPUs={self.cpus} "
                f"RealMemory={mem} State=UNKNOWN"
            )
            node_list = "localhost"
        else:
            last = node_port + self.nodes - 1
            node_list = f"n[1-{self.nodes}]"
            node_line = (
                f"NodeName={node_list} NodeHostname=localhost NodeAddr=127.0.0.1 "
                f"Port=[{node_port}-{last}] CPUs={self.cpus} RealMemory={mem} State=UNKNOWN"
            )
        lines = [
            "ClusterName=longseqtest",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={ctld_port}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/none",  # else every client looks for a munge socket
            "CredType=cred/none",
            # the cgroup tracker fails here ("freezer not mounted") and srun still exits 0
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",  # no sacct: scontrol show job
            "JobCompType=jobcomp/filetxt",  # one line per finished job: state, exit code
            f"JobCompLoc={r / 'jobcomp.txt'}",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",  # start in ~1 s
            "EnforcePartLimits=ALL",  # impossible requests fail at submit, not pend forever
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "MinJobAge=600",
            "KillWait=10",
            "MpiDefault=none",
            "MailProg=/bin/true",
            f"PlugStackConfig={r / 'plugstack.conf'}",  # empty: the system's config stays out
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool' / '%n'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd-%n.log'}",
            node_line,
            f"PartitionName={self.partition} Nodes={node_list} Default=YES MaxTime=INFINITE "
            "State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, argv: list[str], log_name: str) -> None:
        log = open(self.root / "log" / log_name, "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        proc = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # setsid: keep terminal signals and process groups apart
        )
        self._procs.append(proc)

    def start(self, timeout: float = 30.0) -> SlurmCluster:
        self.write_conf()
        self._spawn([_which("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld.out")
        for name in self.node_names:
            self._spawn(
                [_which("slurmd"), "-D", "-N", name, "-f", str(self.conf)], f"slurmd-{name}.out"
            )
        try:
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"Slurm daemon {proc.args} exited with {proc.returncode}\n{self.logs()}"
                    )
            res = self.run("sinfo", "-h", "-N", "-o", "%N %t", check=False)
            last = res.stdout + res.stderr
            states = dict(line.split() for line in res.stdout.splitlines() if line.strip())
            if res.returncode == 0 and all(states.get(n) == "idle" for n in self.node_names):
                return
            time.sleep(0.2)
        raise TimeoutError(f"Slurm nodes not idle after {timeout}s: {last!r}\n{self.logs()}")

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name} ---\n{text[-tail:]}")
        return "\n".join(parts)

    def stop(self, timeout: float = 15.0) -> None:
        """Cancel this cluster's jobs, then stop exactly the daemons this object started."""
        if any(p.poll() is None for p in self._procs):
            jobs = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
            if jobs:
                self.run("scancel", *jobs, check=False)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if not self.run("squeue", "-h", "-o", "%i", check=False).stdout.split():
                        break
                    time.sleep(0.2)
        # slurmd first (their job steps end with them), slurmctld last.
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        self._procs.clear()
        for log in self._logs:
            log.close()  # type: ignore[attr-defined]
        self._logs.clear()

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    # -- clients -----------------------------------------------------------------------------

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client (``sinfo``, ``scontrol``, ...) against this cluster."""
        res = subprocess.run(
            [_which(argv[0]), *argv[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({res.returncode}): {res.stdout}{res.stderr}"
            )
        return res

    def submit(
        self,
        script: str | os.PathLike[str],
        export: dict[str, str] | None = None,
        *,
        sbatch_args: tuple[str, ...] | list[str] = (),
        script_args: tuple[str, ...] | list[str] = (),
        cwd: str | os.PathLike[str] | None = None,
    ) -> int:
        """``sbatch --export=ALL,K=V,...`` the script; returns the job id.

        Values that contain a comma cannot be written in ``--export``: those travel through the
        submitting environment instead (``--export=ALL`` passes them on just the same).
        """
        export = {k: str(v) for k, v in (export or {}).items()}
        env = dict(self.env)
        inline = []
        for key, value in export.items():
            if "," in value:
                env[key] = value
            else:
                inline.append(f"{key}={value}")
        argv = [
            _which("sbatch"),
            "--parsable",
            "--export=" + ",".join(["ALL", *inline]),
            *sbatch_args,
            str(script),
            *script_args,
        ]
        res = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
        if res.returncode != 0:
            raise RuntimeError(f"sbatch failed ({res.returncode}): {res.stdout}{res.stderr}")
        return int(res.stdout.strip().split(";")[0])

    def job_info(self, job_id: int) -> dict[str, str]:
        """``scontrol show job -o`` as a dict ({} once the job is gone)."""
        res = self.run("scontrol", "show", "job", "-o", str(job_id), check=False)
        if res.returncode != 0 or not res.stdout.strip():
            return {}
        info: dict[str, str] = {}
        for token in res.stdout.strip().split(" "):
            key, sep, value = token.partition("=")
            if sep:
                info[key] = value
        return info

    def _jobcomp(self, job_id: int) -> dict[str, str]:
        path = self.root / "jobcomp.txt"
        if not path.exists():
            return {}
        found: dict[str, str] = {}
        for line in path.read_text().splitlines():
            fields = dict(tok.partition("=")[::2] for tok in line.split() if "=" in tok)
            if fields.get("JobId") == str(job_id):
                found = fields  # the last line wins (a requeued job has several)
        return found

    def result(self, job_id: int) -> JobResult:
        info = self.job_info(job_id)
        if info:
            state = info.get("JobState", "UNKNOWN")
            code, _, sig = info.get("ExitCode", "0:0").partition(":")
            return JobResult(
                job_id=job_id,
                state=state,
                exit_code=int(code or 0),
                signal=int(sig or 0),
                restarts=int(info.get("Restarts", "0")),
                stdout_path=info.get("StdOut"),
                info=info,
            )
        comp = self._jobcomp(job_id)
        code, _, sig = comp.get("ExitCode", "0:0").partition(":")
        return JobResult(
            job_id=job_id,
            state=comp.get("JobState", "UNKNOWN"),
            exit_code=int(code or 0),
            signal=int(sig or 0),
            restarts=0,
            stdout_path=None,
            info=comp,
        )

    def release_requeued(self, job_id: int, timeout: float = 60.0) -> JobResult:
        """Let a job that requeued itself start again now instead of after Slurm's delay.

        Slurm holds a requeued job back (BeginTime, about 2 minutes) while slurmd still has its
        old credential revoked. Releasing it within the same second as the requeue makes slurmd
        refuse the launch ("Job credential revoked") and the job ends FAILED, so wait 2 s first.
        """
        res = self.wait_for(
            job_id, lambda r: r.restarts >= 1 and r.state == "PENDING", timeout=timeout
        )
        time.sleep(2.0)
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
        return res

    def wait(self, job_id: int, timeout: float = 120.0, poll: float = 0.25) -> JobResult:
        """Poll until the job reaches a terminal state; returns it (raises on timeout)."""
        return self.wait_for(job_id, lambda r: r.state in TERMINAL_STATES, timeout, poll)

    def wait_for(
        self,
        job_id: int,
        predicate,  # noqa: ANN001 - Callable[[JobResult], bool]
        timeout: float = 120.0,
        poll: float = 0.25,
    ) -> JobResult:
        deadline = time.monotonic() + timeout
        while True:
            res = self.result(job_id)
            if predicate(res):
                return res
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"job {job_id} still {res.state} after {timeout}s\n{res.describe()}\n"
                    f"{self.logs()}"
                )
            time.sleep(poll)
