"""Fault injection against the real CLIs: what must survive a crash, a second job, a crafted
checkpoint and out-of-vocabulary data (issue 14). Tiny preset, a few steps per run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from longseq.eval.load import load_model
from longseq.parallel.checkpoint import verify_checkpoint
from longseq.parallel.pointers import latest_checkpoint

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


def _args(data: Path, run: Path, steps: int, *extra: str, nproc: int = 1) -> list[str]:
    launch = [str(BIN / "torchrun"), "--nproc-per-node", str(nproc), "-m"]
    return [
        *(launch if nproc > 1 else [sys.executable, "-m"]),
        "longseq.train",
        "experiment=tiny",
        f"data.path={data}",
        f"run_dir={run}",
        f"trainer.max_steps={steps}",
        "trainer.checkpoint_every=2",
        "trainer.log_every=2",
        "trainer.progress=false",
        *extra,
    ]


def _run(args: list[str], ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV)
    assert (proc.returncode == 0) == ok, proc.stderr[-4000:]
    return proc


def _start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=ENV)


def _wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.time() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.01)


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").open()]


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _rank_of(pid: int) -> int | None:
    env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    ranks = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-process run of 4 steps (checkpoints step_2 and step_4). Read-only."""
    run = tmp_path_factory.mktemp("faults") / "run"
    _run(_args(tiny_data, run, 4))
    return run


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_model(ckpt, json.loads((ckpt / "longseq.json").read_text())).state_dict()


def test_kill_9_of_one_worker_then_resume_equals_an_uninterrupted_run(tiny_data, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(_args(tiny_data, straight, 8, nproc=2))
    proc = _start(_args(tiny_data, killed, 8, nproc=2), tmp_path / "killed.log")
    latest = killed / "checkpoints" / "latest"
    _wait_for(latest.is_file, proc, "the first checkpoint")
    workers = [p for p in _children(proc.pid) if _rank_of(p) is not None]
    victim = next(p for p in workers if _rank_of(p) == 1)
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=120) != 0  # torchrun reports the dead worker
    stopped = latest_checkpoint(killed)
    assert stopped is not None and int(stopped.name.split("_")[1]) < 8
    _run(_args(tiny_data, killed, 8, "resume=auto", nproc=2))
    seen = [(r["step"], r["requests_seen"]) for r in _rows(killed)]
    assert seen == [(r["step"], r["requests_seen"]) for r in _rows(straight)]  # no duplicates
    a, b = _weights(straight / "checkpoints/step_8"), _weights(killed / "checkpoints/step_8")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)


def test_sigkill_during_a_checkpoint_write_leaves_latest_complete(tiny_data, tmp_path):
    run = tmp_path / "run"
    root = run / "checkpoints"
    proc = _start(_args(tiny_data, run, 400, "trainer.checkpoint_every=1"), tmp_path / "a.log")
    _wait_for(lambda: (root / "latest").is_file(), proc, "the first checkpoint")
    _wait_for(lambda: any(root.glob("step_*.tmp-*")), proc, "a checkpoint being written")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    left = list(root.glob("step_*.tmp-*"))
    assert left, "the kill did not land inside a checkpoint write"
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ".tmp" not in ckpt.name
    verify_checkpoint(ckpt)  # every file of the manifest present and whole
    _weights(ckpt)
    step = int(ckpt.name.split("_")[1])
    proc = _run(_args(tiny_data, run, step + 2, "resume=auto"))
    assert "incomplete checkpoint of an earlier run" in proc.stderr
    assert not list(root.glob("step_*.tmp*"))
    assert latest_checkpoint(run) == root / f"step_{step + 2}"


def test_a_second_job_on_the_same_run_dir_is_refused(tiny_data, tmp_path):
    run = tmp_path / "run"
    first = _start(_args(tiny_data, run, 10_000), tmp_path / "first.log")
    _wait_for(lambda: (run / "checkpoints" / "latest").is_file(), first, "the first checkpoint")
    second = _run(_args(tiny_data, run, 30, "seed=7"), ok=False)
    assert "in use by another job" in second.stderr and f"pid {first.pid}" in second.stderr
    assert first.poll() is None  # the first job never noticed
    first.send_signal(signal.SIGTERM)  # preemption: checkpoint at the next step, exit 0
    assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()[-3000:]
    steps = [r["step"] for r in _rows(run)]
    assert steps == sorted(set(steps))  # one writer: no interleaved or repeated rows
    ckpts = sorted((run / "checkpoints").glob("step_*"), key=lambda p: int(p.name[5:]))
    assert ckpts and not list((run / "checkpoints").glob("*.tmp*"))
    for ckpt in ckpts:
        assert json.loads((ckpt / "longseq.json").read_text())["step"] == int(ckpt.name[5:])
        verify_checkpoint(ckpt)
    assert latest_checkpoint(run) == ckpts[-1]
    _weights(ckpts[-1])
    assert (run / ".lock").read_text() == ""  # released at the end


class _Planted:
    """Unpickles by running code (it writes a marker file), then returns the real metadata."""

    def __init__(self, marker: Path, real: Path) -> None:
        self.marker, self.real = marker, real

    def __reduce__(self):
        code = (
            f"(open({str(self.marker)!r}, 'w').write('ran'), "
            f"__import__('pickle').load(open({str(self.real)!r}, 'rb')))[1]"
        )
        return (eval, (code,))


def _plant(trained: Path, dst: Path) -> Path:
    """A copy of ``trained`` whose checkpoints' ``.metadata`` run code; returns the marker."""
    import pickle

    shutil.copytree(trained, dst)
    (dst / ".lock").unlink(missing_ok=True)
    marker = dst.parent / "marker"
    for ckpt in (dst / "checkpoints").glob("step_*"):
        real = ckpt / "real.metadata"
        (ckpt / ".metadata").rename(real)
        (ckpt / ".metadata").write_bytes(pickle.dumps(_Planted(marker, real)))
        info = json.loads((ckpt / "longseq.json").read_text())
        info["manifest"][".metadata"] = (ckpt / ".metadata").stat().st_size  # a careful attacker
        (ckpt / "longseq.json").write_text(json.dumps(info))
    return marker


def test_a_crafted_checkpoint_is_refused_by_eval_resume_and_the_callback(
    trained, tiny_data, tmp_path
):
    import pickle

    from longseq.parallel.safe_load import UnsafeCheckpointError
    from longseq.train.callbacks import LoopState
    from longseq.train.eval_callback import EvalCallback

    run = tmp_path / "run"
    marker = _plant(trained, run)
    ckpt = run / "checkpoints" / "step_4"
    evaluate = [sys.executable, "-m", "longseq.eval", f"data.path={tiny_data}", "progress=false"]
    target = run / "checkpoints" / "latest"  # the pointer file, followed
    proc = _run([*evaluate, f"checkpoint={target}", f"out={tmp_path / 'out'}"], ok=False)
    assert "refusing to load builtins.eval" in proc.stderr and ".metadata" in proc.stderr
    proc = _run(_args(tiny_data, run, 6, "resume=auto"), ok=False)
    assert "refusing to load builtins.eval" in proc.stderr
    cb = EvalCallback(str(tiny_data), [16], every=2, at_end=True)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load builtins.eval"):
        cb.on_train_end(LoopState(4, 4, str(run), {}, str(ckpt)))
    assert not marker.exists()  # no load path ran the planted code
    pickle.loads((ckpt / ".metadata").read_bytes())  # the plant works against plain pickle
    assert marker.exists()


def test_truncated_checkpoint_files_are_named(trained, tmp_path):
    from longseq.eval.evaluate import evaluate  # noqa: F401  (the eval path's loader)
    from longseq.parallel.checkpoint import read_checkpoint_meta

    for name in ("__0_0.distcp", ".metadata", "longseq.json"):
        ckpt = tmp_path / name / "step_4"
        shutil.copytree(trained / "checkpoints" / "step_4", ckpt)
        f = ckpt / name
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        with pytest.raises((ValueError, FileNotFoundError), match=re.escape(str(f))):
            _weights(ckpt) if name != "longseq.json" else read_checkpoint_meta(ckpt)


def test_out_of_vocabulary_ids_at_eval_are_named(trained, tmp_path):
    import importlib.util

    from longseq.eval.config import EvalConfig, EvalDataConfig
    from longseq.eval.evaluate import evaluate

    # tests/conftest.py by path: a bare ``import conftest`` may find tests/launch/conftest.py
    spec = importlib.util.spec_from_file_location(
        "root_conftest", Path(__file__).parents[1] / "conftest.py"
    )
    root = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root)
    bigger = root.make_tiny(tmp_path / "bigger", items_per_category=40)  # 800 items, model 400
    cfg = EvalConfig(
        checkpoint=str(trained),
        data=EvalDataConfig(path=str(bigger)),
        out=str(tmp_path / "out"),
        progress=False,
    )
    with pytest.raises(ValueError) as e:
        evaluate(cfg)
    msg = str(e.value)
    assert str(bigger / "test") in msg and "num_items=400" in msg and "column 'hist_item_id'" in msg
    assert "holds id" in msg


def test_resume_with_another_model_config_names_the_key(trained, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    proc = _run(_args(tiny_data, run, 6, "resume=auto", "model.embedding_dim=24"), ok=False)
    assert "model.embedding_dim: 16 in the checkpoint, 24 now" in proc.stderr, proc.stderr[-2000:]


def test_sigterm_stops_at_the_next_log_step_with_a_checkpoint(tiny_data, tmp_path):
    """Preemption is agreed at log (and checkpoint) steps only: a SIGTERM stops the run at the
    next multiple of log_every (no checkpoint step is near), with a checkpoint of it, exit 0."""
    run = tmp_path / "run"
    args = _args(tiny_data, run, 10_000, "trainer.log_every=3", "trainer.checkpoint_every=1000")
    proc = _start(args, tmp_path / "run.log")
    _wait_for(lambda: (run / "metrics.jsonl").is_file(), proc, "the first log line")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()[-3000:]
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    step = int(ckpt.name.split("_")[1])
    assert step % 3 == 0 and step < 1000
    assert _rows(run)[-1]["step"] == step
    assert f"preempted: checkpointed step {step}" in (tmp_path / "run.log").read_text()
