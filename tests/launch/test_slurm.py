"""launch/slurm/*.sbatch against a real local Slurm (tests/launch/slurm_cluster.py).

Two kinds of job:

* a stand-in trainer (``FAKE_TRAINER`` below, run through the same sbatch -> srun -> torchrun.sh
  -> torchrun path via ``LONGSEQ_MODULE``) that does a gloo all_reduce per step and writes the
  run-dir files of the trainer's contract. It tests the harness, the parameters, the run dir,
  and the rendezvous on 1 and 2 nodes in seconds, independently of the trainer;
* the real trainer (``longseq.train``) on the tiny synthetic data set: trains and checkpoints;
  eval.sbatch evaluates the checkpoint; a second submission with the same RUN_DIR resumes; a
  SIGUSR1 (Slurm's warning before the time limit) makes it checkpoint and requeue, and the
  requeued job resumes and finishes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, require_slurm

pytestmark = pytest.mark.slurm

FAKE_TRAINER = r'''
"""Stand-in for longseq.train: a gloo all_reduce per step, metrics.jsonl and a checkpoint."""
import json, os, sys
from pathlib import Path

import torch
import torch.distributed as dist

args = dict(a.split("=", 1) for a in sys.argv[1:])
run_dir = Path(args["run_dir"])
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
max_steps = int(args.get("trainer.max_steps", "3"))
for step in range(1, max_steps + 1):
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        rec = {"step": step, "allreduce": t.item(), "world_size": world}
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
if rank == 0:
    ckpt = run_dir / "checkpoints" / f"step_{max_steps}"
    ckpt.mkdir(parents=True)
    (ckpt / "args.json").write_text(json.dumps(args))
    (run_dir / "checkpoints" / "latest").write_text(ckpt.name)
dist.destroy_process_group()
'''


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def latest_checkpoint(run_dir: Path) -> Path:
    latest = run_dir / "checkpoints" / "latest"
    assert latest.is_file(), f"no {latest}"
    ckpt = run_dir / "checkpoints" / latest.read_text().strip()
    assert ckpt.is_dir(), f"latest names {ckpt.name}, which does not exist"
    assert any(ckpt.iterdir()), f"{ckpt} is empty"
    return ckpt


def step_of(ckpt: Path) -> int:
    return int(ckpt.name.removeprefix("step_"))


@pytest.fixture()
def fake_env(tmp_path: Path, job_path: str) -> dict[str, str]:
    """Exports that run the stand-in trainer through train.sbatch, without an activated venv."""
    mod_dir = tmp_path / "mods"
    mod_dir.mkdir()
    (mod_dir / "fake_trainer.py").write_text(FAKE_TRAINER)
    return {
        "PATH": job_path,
        "VENV": str(Path(sys.prefix)),  # the scripts find python as $VENV/bin/python
        "PYTHONPATH": str(mod_dir),
        "LONGSEQ_MODULE": "fake_trainer",
        "DATA": str(tmp_path / "no-data"),
        "EXPERIMENT": "tiny",
        "OMP_NUM_THREADS": "1",
    }


def test_sbatch_two_gloo_processes_default_run_dir_and_parameters(
    slurm: SlurmCluster, repo: Path, tmp_path: Path, fake_env: dict[str, str]
) -> None:
    """sbatch -> srun -> torchrun.sh -> 2 gloo workers, python found through VENV with no venv on
    PATH; without RUN_DIR the run goes to <submit dir>/runs/<job name>-<job id>; EXPERIMENT,
    MAX_STEPS, EXTRA_ARGS and script arguments reach the trainer; resume=auto is added."""
    export = {**fake_env, "NPROC_PER_NODE": "2", "MAX_STEPS": "9", "EXTRA_ARGS": "a=1 b=x"}
    job = slurm.submit(
        repo / "launch/slurm/train.sbatch",
        export,
        cwd=tmp_path,
        sbatch_args=["--job-name=lsq"],
        script_args=["trainer.max_steps=3"],  # after MAX_STEPS: Hydra's last value wins
    )
    res = slurm.wait(job, timeout=90)
    assert res.ok, res.describe()
    out = res.output()
    assert Path(res.stdout_path or "") == tmp_path / f"lsq-{job}.out"  # log in the submit dir
    assert f"job {job} (restart 0) on 1 node(s) [localhost]" in out, out
    assert f"python {sys.prefix}/bin/python" in out, out
    run_dir = tmp_path / "runs" / f"lsq-{job}"
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == [1, 2, 3], res.describe()
    assert all(m["world_size"] == 2 and m["allreduce"] == 3.0 for m in metrics), metrics
    args = json.loads((latest_checkpoint(run_dir) / "args.json").read_text())
    assert args == {
        "experiment": "tiny",
        "data.path": fake_env["DATA"],
        "run_dir": str(run_dir),
        "trainer.max_steps": "3",
        "a": "1",
        "b": "x",
        "resume": "auto",
    }, args


def test_sbatch_without_data_fails_fast(
    slurm: SlurmCluster, repo: Path, tmp_path: Path, fake_env: dict[str, str]
) -> None:
    bad = {k: v for k, v in fake_env.items() if k != "DATA"}
    job = slurm.submit(repo / "launch/slurm/train.sbatch", bad, cwd=tmp_path)
    res = slurm.wait(job, timeout=60)
    assert res.state == "FAILED", res.describe()
    assert "set DATA=" in res.output(), res.describe()


def test_two_nodes_rendezvous(repo: Path, tmp_path: Path, fake_env: dict[str, str]) -> None:
    """sbatch --nodes=2: one torchrun per node, c10d rendezvous on the head; world size 2.
    (Both emulated nodes are 127.0.0.1, so the loopback guard is lifted for this test; the guard
    itself is tested in test_head_address.py with a stand-in srun: on a real host it would fall
    back to the host's other addresses, which tests here must not send traffic to.)"""
    require_slurm()
    with SlurmCluster(nodes=2) as cluster:
        run_dir = tmp_path / "run"
        export = {
            **fake_env,
            "NPROC_PER_NODE": "1",
            "MAX_STEPS": "3",
            "RUN_DIR": str(run_dir),
            "LONGSEQ_ALLOW_LOOPBACK_HEAD": "1",
        }
        job = cluster.submit(
            repo / "launch/slurm/train.sbatch", export, cwd=tmp_path, sbatch_args=["--nodes=2"]
        )
        res = cluster.wait(job, timeout=90)
        assert res.ok, res.describe()
        out = res.output()
        assert "on 2 node(s) [n[1-2]], head n1 = 127.0.0.1:" in out, out
        assert out.count("torchrun.sh on ") == 2, out  # one torchrun per node
        metrics = read_metrics(run_dir)
        assert [m["step"] for m in metrics] == [1, 2, 3], res.describe()
        assert all(m["world_size"] == 2 and m["allreduce"] == 3.0 for m in metrics), metrics


# -- the real trainer ---------------------------------------------------------------------------


@pytest.mark.skipif(
    not (Path(__file__).resolve().parents[2] / "longseq/train/__main__.py").exists(),
    reason="the trainer (longseq/train/__main__.py) has not landed yet",
)
def test_train_sbatch_trains_resumes_and_survives_preemption(
    slurm: SlurmCluster, repo: Path, tmp_path: Path, tiny_data: Path, job_path: str
) -> None:
    """Acceptance, with the real trainer on the tiny data set, 2 CPU processes:
    1. train.sbatch trains 4 steps and checkpoints; eval.sbatch evaluates that checkpoint;
    2. a second submission with the same RUN_DIR resumes from step 4 (not from 1);
    3. SIGUSR1 to its batch shell (what --signal=B:USR1@120 sends before the time limit) makes
       the trainer checkpoint the step it reached; the job requeues itself (same id, same run
       dir), resumes from that checkpoint and finishes: no step lost or repeated."""
    run_dir = tmp_path / "run"
    export = {
        "PATH": job_path,
        "LONGSEQ_PYTHON": sys.executable,
        "DATA": str(tiny_data),
        "RUN_DIR": str(run_dir),
        "EXPERIMENT": "tiny",
        "NPROC_PER_NODE": "2",
        "MAX_STEPS": "4",
        "EXTRA_ARGS": "trainer.checkpoint_every=2 trainer.log_every=1 trainer.progress=false",
        "MAX_RESTARTS": "0",
    }
    job = slurm.submit(repo / "launch/slurm/train.sbatch", export, cwd=tmp_path)
    res = slurm.wait(job, timeout=180)
    assert res.ok, res.describe()
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3, 4], res.describe()
    ckpt = latest_checkpoint(run_dir)
    assert step_of(ckpt) == 4, (ckpt, res.describe())
    assert (run_dir / "config.yaml").is_file()

    ev = {k: export[k] for k in ("PATH", "LONGSEQ_PYTHON", "DATA", "RUN_DIR")}
    ev["EXTRA_ARGS"] = "progress=false"
    job_ev = slurm.submit(repo / "launch/slurm/eval.sbatch", ev, cwd=tmp_path)
    res_ev = slurm.wait(job_ev, timeout=120)
    assert res_ev.ok, res_ev.describe()
    assert (run_dir / "eval" / f"step_4-{job_ev}" / "eval.json").is_file(), res_ev.describe()

    max_steps = 100
    export["MAX_STEPS"] = str(max_steps)
    export["EXTRA_ARGS"] = (
        "trainer.checkpoint_every=1000 trainer.log_every=1 trainer.progress=false"
    )
    job2 = slurm.submit(repo / "launch/slurm/train.sbatch", export, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while max((m["step"] for m in read_metrics(run_dir)), default=0) < 6:
        r = slurm.result(job2)
        assert r.state in ("PENDING", "RUNNING", "CONFIGURING"), r.describe()
        assert time.monotonic() < deadline, r.describe()
        time.sleep(0.1)
    slurm.run("scancel", "--batch", "--signal=USR1", str(job2))
    requeued = slurm.release_requeued(job2, timeout=120)
    out = requeued.output()
    assert f"resumed from {ckpt} at step 4" in out, requeued.describe()
    assert "asking the workers to checkpoint" in out, requeued.describe()
    stopped = latest_checkpoint(run_dir)
    assert 6 <= step_of(stopped) < max_steps, requeued.describe()
    assert f"preempted: checkpointed step {step_of(stopped)}" in out, requeued.describe()

    res2 = slurm.wait_for(
        job2, lambda r: r.restarts >= 1 and r.state in ("COMPLETED", "FAILED"), timeout=180
    )
    assert res2.ok, res2.describe()
    out = res2.output()
    assert f"job {job2} (restart 1)" in out, res2.describe()
    assert f"resumed from {stopped} at step {step_of(stopped)}" in out, res2.describe()
    steps = [m["step"] for m in read_metrics(run_dir)]
    assert steps == list(range(1, max_steps + 1)), steps  # none lost, none repeated
    assert step_of(latest_checkpoint(run_dir)) == max_steps
