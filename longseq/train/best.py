"""``checkpoints/best``: the evaluated checkpoint with the best ``trainer.best_metric``, and the
early-stopping count.

The evaluation callback hands every mid-run evaluation's logged values to `BestTracker.update`
on rank 0. ``checkpoints/best`` is a pointer like ``latest`` (one line naming a ``step_<n>``
folder) and ``checkpoints/best.json`` records the metric, the best value, its step and every
evaluation so far (``evaluations``: ``[step, value]`` pairs), written after each evaluation;
checkpoint pruning (``trainer.keep_last``) never deletes the folder ``best`` names.

A resumed run replays the recorded evaluations up to its start step: the best value, its step
and the evaluations without a new best since (``since_best``, what early stopping counts) are
exactly what they were when that checkpoint's evaluation was done, also when the run resumes
from an earlier checkpoint than the newest (later evaluations are forgotten, ``best`` moved
back).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from longseq.log import get_logger
from longseq.parallel.pointers import STEP, checkpoint_root, write_pointer
from longseq.parallel.untrusted import read_text_no_follow, replace_text

log = get_logger("longseq.train")


def default_metric(results: list[dict[str, Any]]) -> str:
    """``eval/auc/<first task>@<largest window>`` of an evaluation's result rows."""
    task = results[0]["task"]
    window = max(int(r["window"]) for r in results if r["task"] == task)
    return f"eval/auc/{task}@{window}"


class BestTracker:
    """Keeps ``checkpoints/best`` on the best value of ``metric`` (empty: `default_metric`).

    ``start``: the step a resumed run starts at (evaluations recorded after it are dropped);
    None keeps every recorded evaluation.
    """

    def __init__(self, run_dir: str | Path, metric: str = "", start: int | None = None) -> None:
        self.root = checkpoint_root(run_dir)
        self.metric = metric
        self.value: float | None = None
        self.step: int | None = None
        self.history: list[tuple[int, float]] = []
        self.since_best = 0  #: evaluations since the best one (early stopping counts these)
        rec = self._record()
        if rec and (not metric or rec.get("metric") == metric):
            self.metric = rec["metric"]
            self._restore(rec, start)

    def _record(self) -> dict[str, Any]:
        f = self.root / "best.json"
        try:
            rec = json.loads(read_text_no_follow(f)) if f.is_file() else {}
        except ValueError:  # SymlinkRefused is one: a planted link is ignored, never read
            log.warning(f"ignoring unreadable {f}")
            return {}
        ok = isinstance(rec, dict) and "metric" in rec and ("value" in rec or "evaluations" in rec)
        return rec if ok else {}

    def _restore(self, rec: dict[str, Any], start: int | None) -> None:
        evaluations = rec.get("evaluations")
        if not isinstance(evaluations, list):  # written before the history was recorded
            step = rec.get("step")
            if rec.get("value") is not None:
                self.value = float(rec["value"])
                self.step = int(step) if isinstance(step, int) else None
            return
        for step, value in evaluations:
            if start is None or int(step) <= start:
                self._add(int(step), float(value))
        old = rec.get("step")
        folder = self.best_checkpoint()
        if folder is not None:  # the pointer agrees with the replay (a resume may move it back)
            write_pointer(self.root, "best", folder)
            if old != self.step:
                log.info(f"checkpoints/best: back to {folder.name} (resumed at step {start})")
        if len(self.history) != len(evaluations) or old != self.step:
            self._write()

    def better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.value is None:
            return True
        lower = self.metric.startswith("eval/nll/")
        return value < self.value if lower else value > self.value

    def _add(self, step: int, value: float, eligible: bool = True) -> bool:
        self.history.append((step, value))
        if eligible and self.better(value):
            self.value, self.step, self.since_best = value, step, 0
            return True
        self.since_best += 1
        return False

    def _write(self) -> None:
        rec = {
            "metric": self.metric,
            "value": self.value,
            "step": self.step,
            "checkpoint": None if self.step is None else f"step_{self.step}",
            "since_best": self.since_best,
            "evaluations": [[s, v] for s, v in self.history],
        }
        replace_text(self.root / "best.json", json.dumps(rec, indent=2) + "\n")

    def update(self, step: int, values: dict[str, Any], results: list[dict[str, Any]]) -> bool:
        """Consider the checkpoint of ``step`` with its logged eval ``values``; returns whether
        it became the best. Raises ``KeyError`` naming the metric when it was not logged."""
        if not self.metric:
            self.metric = default_metric(results)
        if self.metric not in values:
            have = ", ".join(sorted(k for k in values if k.startswith("eval/")))
            raise KeyError(
                f"trainer.best_metric={self.metric!r} is not among the evaluation's values ({have})"
            )
        folder = self.root / f"step_{step}"
        eligible = bool(STEP.match(folder.name)) and folder.is_dir()
        improved = self._add(step, float(values[self.metric]), eligible)
        if improved:
            write_pointer(self.root, "best", folder)
        self._write()
        return improved

    def best_checkpoint(self) -> Path | None:
        """The folder ``checkpoints/best`` names, if there is one."""
        if self.step is None:
            return None
        folder = self.root / f"step_{self.step}"
        return folder if folder.is_dir() else None
