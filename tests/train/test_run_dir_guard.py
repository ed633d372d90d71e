"""The run dir is guarded (issue 25, cases 2 and 7): a training does not silently overwrite an
earlier run's checkpoints and metrics, and the evaluation (and serving) write inside a run dir
only under its lock. In process: the tiny experiment trains 4 steps in about a second."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
from inproc import one_process_group, tiny_job  # noqa: F401 - the fixture

from longseq.parallel.run_lock import RunDirLock, RunDirLocked


def _snapshot(run: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``run`` (but the lock file) with its size and mtime."""
    return {
        str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").open()]


@pytest.mark.usefixtures("one_process_group")
def test_a_second_training_needs_resume_auto_or_overwrite(tiny_data, tmp_path):
    from longseq.train.loop import train

    run = tmp_path / "run"
    train(tiny_job(tiny_data, run, 4))
    before = _snapshot(run)
    assert _steps(run) == [2, 4]
    with pytest.raises(FileExistsError) as e:
        train(tiny_job(tiny_data, run, 4, "seed=7"))
    msg = str(e.value)
    assert "resume=auto" in msg and "overwrite=true" in msg and "step_2, step_4" in msg
    assert _snapshot(run) == before  # not one byte of the earlier run changed
    assert (run / ".lock").read_text() == ""  # and the lock was released

    train(tiny_job(tiny_data, run, 6, "resume=auto"))  # continuing is allowed
    assert _steps(run) == [2, 4, 6]

    train(tiny_job(tiny_data, run, 2, "overwrite=true"))  # starting over, explicitly
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_2"]
    assert _steps(run) == [2]


def _checkpointed(tiny_data: Path, run: Path) -> None:
    from longseq.train.loop import train

    train(tiny_job(tiny_data, run, 2))


def _hold_as_another_job(run: Path) -> int:
    """Lock ``run`` through another open file description, as another process would (this
    process does not count it as its own)."""
    fd = os.open(run / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, json.dumps({"host": "elsewhere", "pid": 424242, "started": "then"}).encode(), 0)
    return fd


@pytest.mark.usefixtures("one_process_group")
def test_the_evaluation_honours_the_run_dir_lock(tiny_data, tmp_path):
    from longseq.eval.config import EvalConfig, EvalDataConfig
    from longseq.eval.evaluate import evaluate

    run = tmp_path / "run"
    _checkpointed(tiny_data, run)
    from longseq.parallel.env import destroy_distributed

    destroy_distributed()  # evaluate in one plain process

    def cfg(out: Path) -> EvalConfig:
        data = EvalDataConfig(path=str(tiny_data))
        return EvalConfig(checkpoint=str(run), data=data, out=str(out), windows=[16])

    fd = _hold_as_another_job(run)
    try:
        with pytest.raises(RunDirLocked, match=r"out=.*/run/eval lies inside run_dir .*pid 424242"):
            evaluate(cfg(run / "eval"))
        assert not (run / "eval").exists()
        evaluate(cfg(tmp_path / "elsewhere"))  # writing outside the run dir needs no lock
        assert (tmp_path / "elsewhere" / "eval.json").is_file()
    finally:
        os.close(fd)
    evaluate(cfg(run / "eval"))  # the training is gone: the evaluation takes the lock
    assert (run / "eval" / "eval.json").is_file()
    assert (run / ".lock").read_text() == ""  # and releases it
    with RunDirLock(run):  # this process's own lock (the training's evaluation callback)
        evaluate(cfg(run / "eval" / "again"))


@pytest.mark.usefixtures("one_process_group")
def test_serving_honours_the_run_dir_lock(tiny_data, tmp_path):
    from longseq.serve.config import ServeConfig
    from longseq.serve.run import serve

    run = tmp_path / "run"
    _checkpointed(tiny_data, run)
    cfg = ServeConfig(checkpoint=str(run), out=str(run / "scores"))
    cfg.data.path = str(tiny_data)
    fd = _hold_as_another_job(run)
    try:
        with pytest.raises(RunDirLocked, match="out=.*lies inside run_dir"):
            serve(cfg)
    finally:
        os.close(fd)
    assert not (run / "scores").exists()


def test_a_symlinked_lock_file_is_refused_unwritten(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (run / ".lock").symlink_to(victim)
    with pytest.raises(ValueError, match="symbolic link"):
        RunDirLock(run).acquire()
    assert victim.read_text() == "keep me\n"
