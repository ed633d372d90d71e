"""Hardening (issue 14), in process and fast: restricted metadata unpickling, confined pointers,
the run-dir lock, config range checks, the resume config diff, metrics rows after a resume,
``checkpoints/best`` and pruning, the history cap, evaluation argument checks."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from longseq.log import setup_logging
from longseq.parallel.pointers import latest_checkpoint, resolve_checkpoint


def _complete(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "longseq.json").write_text(json.dumps({"step": step}))
    return folder


class _Marker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_metadata_unpickler_refuses_code_and_foreign_objects(tmp_path: Path):
    from longseq.parallel.safe_load import UnsafeCheckpointError, read_metadata_file

    marker = tmp_path / "marker"
    f = tmp_path / ".metadata"
    f.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(UnsafeCheckpointError, match=r"\.metadata: refusing to load builtins\.eval"):
        read_metadata_file(f)
    assert not marker.exists()
    f.write_bytes(pickle.dumps({"not": "metadata"}))
    with pytest.raises(UnsafeCheckpointError, match="not DCP Metadata"):
        read_metadata_file(f)
    f.write_bytes(pickle.dumps(os.system))
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        read_metadata_file(f)
    f.write_bytes(b"\x80\x04")  # truncated
    with pytest.raises(ValueError, match="unreadable checkpoint metadata"):
        read_metadata_file(f)


def test_pointers_stay_inside_the_checkpoints_folder(tmp_path: Path):
    root = tmp_path / "run" / "checkpoints"
    _complete(root / "step_2", 2)
    _complete(tmp_path / "elsewhere" / "step_9", 9)
    (root / "latest").write_text("../../elsewhere/step_9\n")
    with pytest.raises(ValueError, match="not a step_<n> folder.*refused"):
        latest_checkpoint(tmp_path / "run")
    (root / "step_9").symlink_to(tmp_path / "elsewhere" / "step_9")
    (root / "latest").write_text("step_9\n")
    with pytest.raises(ValueError, match="outside"):
        latest_checkpoint(tmp_path / "run")
    (root / "step_9").unlink()
    (root / "latest").write_text("step_2\n")
    (root / "best").write_text("step_2\n")
    # the pointer files a user sees are followed
    assert resolve_checkpoint(root / "latest") == root / "step_2"
    assert resolve_checkpoint(root / "best") == root / "step_2"
    assert resolve_checkpoint(tmp_path / "run") == root / "step_2"


def test_keep_last_never_deletes_the_new_or_the_best_checkpoint(tmp_path: Path):
    from longseq.parallel.checkpoint import _prune, save_checkpoint

    root = tmp_path / "checkpoints"
    for s in (1, 2, 3, 4):
        _complete(root / f"step_{s}", s)
    (root / "best").write_text("step_1\n")
    _prune(root, 1, keep={"step_4"})
    assert sorted(p.name for p in root.glob("step_*")) == ["step_1", "step_4"]
    with pytest.raises(ValueError, match="trainer.keep_last must be >= 1"):
        save_checkpoint(tmp_path, 5, {}, {}, {}, keep_last=0)


@pytest.mark.parametrize(
    "key,value",
    [("keep_last", 0), ("checkpoint_every", 0), ("max_steps", 0), ("max_steps", -3)],
)
def test_trainer_range_checks_name_the_key(key: str, value: int):
    from longseq.train.config import TrainerConfig

    with pytest.raises(ValueError, match=f"trainer.{key} must be >= 1"):
        TrainerConfig(**{key: value}).validate("cpu")
    with pytest.raises(ValueError, match="trainer.eval_windows"):
        TrainerConfig(eval_windows=[-5]).validate("cpu")
    with pytest.raises(ValueError, match="trainer.best_metric"):
        TrainerConfig(best_metric="loss").validate("cpu")


def test_run_dir_lock_refuses_a_second_holder_and_takes_over_a_dead_one(tmp_path, capsys):
    setup_logging(0)  # warnings go to stderr as under the CLIs
    from longseq.parallel.run_lock import RunDirLock, RunDirLocked

    with RunDirLock(tmp_path):
        with pytest.raises(RunDirLocked, match=f"pid {os.getpid()} on host"):
            RunDirLock(tmp_path).acquire()  # another open file description: refused
    assert (tmp_path / ".lock").read_text() == ""
    dead = {"host": os.uname().nodename, "pid": 2**22 + 17, "started": "then"}
    (tmp_path / ".lock").write_text(json.dumps(dead))
    lock = RunDirLock(tmp_path)
    lock.acquire()
    assert "taking over the stale lock" in capsys.readouterr().err
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_resume_with_another_model_names_the_config_keys(tmp_path: Path):
    from longseq.train.guards import check_resume_compatible

    saved = {"model": {"embedding_dim": 16, "stca": {"num_layers": 2}}, "tables": {"n": 4}}
    now = {"model": {"embedding_dim": 32, "stca": {"num_layers": 2}}, "tables": {"n": 4}}
    with pytest.raises(ValueError, match=r"model\.embedding_dim: 16 in the checkpoint, 32 now"):
        check_resume_compatible(tmp_path, {**saved, "tasks": ["a"]}, {**now, "tasks": ["a"]})
    check_resume_compatible(tmp_path, {**saved, "tasks": ["a"]}, {**saved, "tasks": ["a"]})


def test_metrics_rows_after_the_resumed_step_are_dropped(tmp_path: Path):
    from longseq.train.logging import MetricsLogger

    log = MetricsLogger(tmp_path, enabled=True)
    for s in (5, 10, 15):
        log.log(s, {"loss": 1.0})
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 20, "lo')  # a line cut short by a crash
    assert log.drop_after(10) == 2
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").open()] == [5, 10]


def test_best_tracker_keeps_the_best_and_resumes_its_value(tmp_path: Path):
    from longseq.train.best import BestTracker

    root = tmp_path / "checkpoints"
    for s in (2, 4, 6):
        _complete(root / f"step_{s}", s)
    results = [{"task": "click", "window": 16}, {"task": "click", "window": 64}]
    best = BestTracker(tmp_path)
    assert best.update(2, {"eval/auc/click@64": 0.6, "eval/auc/click@16": 0.9}, results)
    assert not best.update(4, {"eval/auc/click@64": 0.5}, results)
    assert resolve_checkpoint(root / "best") == root / "step_2"
    again = BestTracker(tmp_path)  # a resumed run
    assert again.metric == "eval/auc/click@64" and again.value == 0.6
    assert again.update(6, {"eval/auc/click@64": 0.7}, results)
    assert (root / "best").read_text().strip() == "step_6"
    nll = BestTracker(tmp_path / "other", "eval/nll/click@64")
    with pytest.raises(KeyError, match="trainer.best_metric"):
        nll.update(2, {"eval/auc/click@64": 0.7}, results)


def test_long_histories_are_cut_to_max_hist_len(tiny_data: Path, capsys):
    setup_logging(0)  # warnings go to stderr as under the CLIs
    from longseq.data.reader import RequestReader

    full = RequestReader(tiny_data / "train", 200, shuffle=False, max_hist_len=-1)
    cut = RequestReader(tiny_data / "train", 200, shuffle=False, max_hist_len=50)
    a, b = next(iter(full)), next(iter(cut))
    long = [i for i, h in enumerate(a.column("hist_item_id").to_pylist()) if len(h) > 50]
    assert long and cut.hist_cut == len(long)
    err = capsys.readouterr().err  # reported once per reader, naming the file
    assert "request(s) with more than data.max_hist_len=50" in err and ".parquet" in err
    for col in ("hist_item_id", "hist_ts", "hist_action", "hist_category_id"):
        for i in long:  # the most recent 50 events
            assert b.column(col)[i].as_py() == a.column(col)[i].as_py()[-50:]
    # default: meta.json's hist_len_max (every tiny history fits)
    assert RequestReader(tiny_data / "train", 8).max_hist_len == 256


def test_eval_argument_errors_name_the_key(tiny_data: Path, tmp_path: Path):
    from longseq.data.source import check_split
    from longseq.eval.config import EvalConfig, EvalDataConfig
    from longseq.eval.evaluate import evaluate

    cfg = EvalConfig(
        checkpoint=str(tmp_path), data=EvalDataConfig(path=str(tiny_data)), out=str(tmp_path)
    )
    cfg.windows = [-5]
    with pytest.raises(ValueError, match=r"windows=\[-5\]"):
        evaluate(cfg)
    with pytest.raises(FileNotFoundError, match="trainer.eval_split=valid.*no 'valid' split"):
        check_split(str(tiny_data), "valid", "trainer.eval_split")
