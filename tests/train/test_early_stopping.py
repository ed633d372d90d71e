"""Early stopping and ``checkpoints/best``: the state a resumed run continues from is exactly
the one of the checkpoint it resumes (best value, its step, evaluations without a new best),
the loop stops after ``trainer.early_stop_patience`` evaluations without a new best, and the
final evaluation scores ``best``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longseq.train.best import BestTracker
from longseq.train.callbacks import LoopState
from longseq.train.config import TrainerConfig
from tests.train.inproc import one_process_env, tiny_job

ROWS = [{"task": "click", "window": 64}]
KEY = "eval/auc/click@64"


def _folders(root: Path, steps) -> None:
    for s in steps:
        (root / f"step_{s}").mkdir(parents=True)


def test_tracker_counts_evaluations_since_the_best_and_replays_them(tmp_path: Path):
    root = tmp_path / "checkpoints"
    _folders(root, (2, 4, 6, 8))
    t = BestTracker(tmp_path)
    for step, auc in ((2, 0.6), (4, 0.7), (6, 0.65), (8, float("nan"))):
        t.update(step, {KEY: auc}, ROWS)
    assert (t.step, t.value, t.since_best) == (4, 0.7, 2)
    again = BestTracker(tmp_path, start=8)  # resumed at the newest checkpoint
    assert (again.step, again.value, again.since_best) == (4, 0.7, 2)
    assert again.history == t.history[:3] + [again.history[3]] and len(again.history) == 4
    back = BestTracker(tmp_path, start=2)  # resumed from an earlier checkpoint
    assert (back.step, back.value, back.since_best, back.history) == (2, 0.6, 0, [(2, 0.6)])
    assert (root / "best").read_text().strip() == "step_2"  # the pointer moved back too
    rec = json.loads((root / "best.json").read_text())
    assert rec["step"] == 2 and rec["evaluations"] == [[2, 0.6]] and rec["since_best"] == 0


def test_tracker_reads_a_record_without_history(tmp_path: Path):
    root = tmp_path / "checkpoints"
    _folders(root, (2,))
    (root / "best.json").write_text(json.dumps({"metric": KEY, "value": 0.6, "step": 2}))
    t = BestTracker(tmp_path, start=2)
    assert (t.metric, t.value, t.step, t.since_best) == (KEY, 0.6, 2, 0)
    assert not t.better(0.5) and t.better(0.61)


@pytest.mark.parametrize(
    ("over", "key"),
    [
        ({"early_stop_patience": -1}, "trainer.early_stop_patience"),
        ({"eval_every": -2}, "trainer.eval_every"),
        ({"select_split": ""}, "trainer.select_split"),
    ],
)
def test_bad_values_name_the_key(over, key):
    with pytest.raises(ValueError, match=key):
        TrainerConfig(**over).validate("cpu")


def test_eval_every_and_select_split_follow_the_valid_split(tmp_path: Path):
    tc = TrainerConfig(checkpoint_every=50)
    assert tc.resolved_eval(str(tmp_path)) == (0, "test")  # no valid split: no mid-run eval
    (tmp_path / "valid").mkdir()
    assert tc.resolved_eval(str(tmp_path)) == (50, "valid")
    assert TrainerConfig(eval_every=0).resolved_eval(str(tmp_path))[0] == 0


class _Crash:
    """Raises after the callbacks of ``step`` - a run killed there."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state: LoopState) -> None:
        if state.step == self.step:
            raise RuntimeError("killed")

    def on_train_end(self, state: LoopState) -> None:
        pass


def _train(job, callbacks=None) -> None:
    from longseq.parallel.env import destroy_distributed
    from longseq.train.loop import train

    with pytest.MonkeyPatch.context() as mp:
        one_process_env(mp)
        try:
            train(job, callbacks)
        finally:
            destroy_distributed()


def _evals(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").open()]
    return [(r["step"], r["eval/auc/click@100"]) for r in rows if "eval/auc/click@100" in r]


def test_resume_keeps_the_early_stopping_state_exactly(tiny_data: Path, tmp_path: Path):
    """Straight run vs a run killed after its 3rd evaluation and resumed: the same evaluations,
    the same best, the same early stop, and the final evaluation is the best checkpoint's."""
    over = (
        "trainer.eval_every=2",
        "trainer.eval_at_end=true",
        "trainer.eval_windows=[100]",
        "trainer.early_stop_patience=2",
        "trainer.pipeline=false",
    )
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _train(tiny_job(tiny_data, straight, 40, *over))
    evals = _evals(straight)
    rec = json.loads((straight / "checkpoints" / "best.json").read_text())
    stopped = evals[-1][0]
    assert stopped < 40 and rec["since_best"] == 2  # it stopped early, on the patience
    assert evals[-1][0] - rec["step"] == 4
    crash = 2 * (len(evals) - 1) + 1  # after the checkpoint and evaluation before the last
    with pytest.raises(RuntimeError, match="killed"):
        _train(tiny_job(tiny_data, resumed, 40, *over), [_Crash(crash)])
    _train(tiny_job(tiny_data, resumed, 40, *over, "resume=auto"))
    got = _evals(resumed)
    assert [s for s, _ in got] == [s for s, _ in evals]  # and no evaluation after the stop
    assert [a for _, a in got] == pytest.approx([a for _, a in evals], abs=1e-6)
    again = json.loads((resumed / "checkpoints" / "best.json").read_text())
    assert (again["step"], again["since_best"]) == (rec["step"], rec["since_best"])
    final = json.loads((resumed / "eval" / "eval.json").read_text())
    assert final["step"] == rec["step"]  # the end evaluation scored checkpoints/best
    rows = [json.loads(x) for x in (resumed / "metrics.jsonl").open()]
    assert rows[-1]["test/step"] == rec["step"] and "test/auc/click@100" in rows[-1]
