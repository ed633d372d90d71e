"""Training inputs, range-checked with the key named, and the run dir guarded (issue 25, cases 2
and 7): learning rates, gradient clipping, ``run_dir``, ``overwrite``; a run dir that already
holds checkpoints is not overwritten without ``resume=auto`` or ``overwrite=true``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from longseq.train.config import TrainJobConfig


@pytest.mark.parametrize(
    "path,value,match",
    [
        ("trainer.dense.lr", -1e-3, r"trainer\.dense\.lr must be a finite number >= 0"),
        ("trainer.dense.lr", math.nan, r"trainer\.dense\.lr must be a finite number >= 0"),
        ("trainer.dense.weight_decay", -0.1, r"trainer\.dense\.weight_decay must be"),
        ("trainer.dense.betas", [0.9, 1.5], r"trainer\.dense\.betas must be two numbers in"),
        ("trainer.dense.betas", [0.9], r"trainer\.dense\.betas must be two numbers in"),
        ("trainer.dense.warmup_steps", -1, r"trainer\.dense\.warmup_steps must be >= 0"),
        ("trainer.dense.min_lr_ratio", 2.0, r"trainer\.dense\.min_lr_ratio must be in \[0, 1\]"),
        ("trainer.dense.grad_clip", math.nan, r"trainer\.dense\.grad_clip must be finite"),
        ("trainer.dense.grad_clip", math.inf, r"trainer\.dense\.grad_clip must be finite"),
        ("sharding.sparse_lr", math.nan, r"sharding\.sparse_lr must be a finite number >= 0"),
        ("sharding.sparse_lr", -0.05, r"sharding\.sparse_lr must be a finite number >= 0"),
    ],
)
def test_rates_and_clipping_are_range_checked_with_the_key(path: str, value, match: str):
    cfg = TrainJobConfig(run_dir="r")
    cfg.validate("cpu")
    *parents, key = path.split(".")
    obj = cfg
    for p in parents:
        obj = getattr(obj, p)
    setattr(obj, key, value)
    with pytest.raises(ValueError, match=match):
        cfg.validate("cpu")


def test_grad_clip_zero_still_means_off():
    cfg = TrainJobConfig(run_dir="r")
    cfg.trainer.dense.grad_clip = 0.0
    cfg.validate("cpu")


def test_run_dir_that_is_a_file_is_named(tmp_path: Path):
    f = tmp_path / "run"
    f.write_text("not a folder")
    with pytest.raises(ValueError, match=f"run_dir={f} is a file"):
        TrainJobConfig(run_dir=str(f)).validate("cpu")
    with pytest.raises(ValueError, match="run_dir must be set"):
        TrainJobConfig(run_dir="").validate("cpu")


def test_overwrite_and_resume_auto_together_are_refused():
    cfg = TrainJobConfig(run_dir="r", resume="auto", overwrite=True)
    with pytest.raises(ValueError, match="overwrite=true and resume=auto"):
        cfg.validate("cpu")


def _checkpoint(run: Path, step: int) -> Path:
    folder = run / "checkpoints" / f"step_{step}"
    folder.mkdir(parents=True)
    (folder / "longseq.json").write_text(json.dumps({"step": step}))
    (run / "checkpoints" / "latest").write_text(f"step_{step}\n")
    return folder


def test_a_run_dir_holding_checkpoints_needs_resume_or_overwrite(tmp_path: Path):
    from longseq.train.guards import prepare_run_dir

    run = tmp_path / "run"
    prepare_run_dir(TrainJobConfig(run_dir=str(run)), is_main=True)  # absent: fine
    _checkpoint(run, 4)
    (run / "checkpoints" / "best").write_text("step_4\n")
    (run / "checkpoints" / "best.json").write_text('{"metric": "m", "value": 1.0}')
    with pytest.raises(FileExistsError) as e:
        prepare_run_dir(TrainJobConfig(run_dir=str(run)), is_main=True)
    msg = str(e.value)
    assert "step_4" in msg and "resume=auto" in msg and "overwrite=true" in msg
    assert (run / "checkpoints" / "step_4").is_dir()  # nothing touched
    prepare_run_dir(TrainJobConfig(run_dir=str(run), resume="auto"), is_main=True)
    inside = str(run / "checkpoints" / "step_4")  # resuming one of its own checkpoints: fine
    prepare_run_dir(TrainJobConfig(run_dir=str(run), resume=inside), is_main=True)
    other = _checkpoint(tmp_path / "other", 2)  # another run's checkpoint: would mix the two
    with pytest.raises(FileExistsError, match="overwrite=true"):
        prepare_run_dir(TrainJobConfig(run_dir=str(run), resume=str(other)), is_main=True)
    prepare_run_dir(TrainJobConfig(run_dir=str(run), overwrite=True), is_main=True)
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left == []  # the earlier run's checkpoints, pointers and best record are gone


@pytest.mark.parametrize(
    "name",
    [
        "metrics.jsonl",
        "config.yaml",
        "checkpoints",
        "eval",
        "bad_rows.rank0.jsonl",
        "checkpoints/best.json.tmp",
    ],
)
def test_run_dir_entries_the_training_writes_must_not_be_links(tmp_path: Path, name: str):
    from longseq.train.guards import prepare_run_dir

    run = tmp_path / "run"
    run.mkdir()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (run / name).parent.mkdir(parents=True, exist_ok=True)
    (run / name).symlink_to(target / "x")
    with pytest.raises(ValueError, match=f"{Path(name).name}: a symbolic link"):
        prepare_run_dir(TrainJobConfig(run_dir=str(run), resume="auto"), is_main=True)


def test_best_record_never_writes_through_a_link_planted_during_the_run(tmp_path: Path):
    """`prepare_run_dir` refuses links at the start; one planted later (``best.json.tmp`` or
    ``best.json`` pointing elsewhere) is replaced, and its target is neither written nor read."""
    from longseq.train.best import BestTracker

    run = tmp_path / "run"
    _checkpoint(run, 3)
    tracker = BestTracker(run, "eval/auc/click@50")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    root = run / "checkpoints"
    (root / "best.json.tmp").symlink_to(victim)
    (root / "best.tmp").symlink_to(victim)
    (root / "best.json").symlink_to(victim)
    assert tracker.update(3, {"eval/auc/click@50": 0.7}, [])
    assert victim.read_text() == "keep me\n"
    assert not (root / "best.json").is_symlink() and not (root / "best").is_symlink()
    assert json.loads((root / "best.json").read_text())["step"] == 3
    assert (root / "best").read_text() == "step_3\n"
    (root / "best.json").unlink()
    (root / "best.json").symlink_to(tmp_path / "planted.json")
    (tmp_path / "planted.json").write_text('{"metric": "eval/auc/click@50", "value": 0.99}')
    assert BestTracker(run, "eval/auc/click@50").value is None  # the link is not read
