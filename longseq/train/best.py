"""``checkpoints/best``: the evaluated checkpoint with the best ``trainer.best_metric``.

The evaluation callback hands every evaluation's logged values to `BestTracker.update` on rank
0. ``checkpoints/best`` is a pointer like ``latest`` (one line naming a ``step_<n>`` folder) and
``checkpoints/best.json`` records the metric, its value and the step; checkpoint pruning
(``trainer.keep_last``) never deletes the folder ``best`` names. A resumed run continues from
the recorded best value.
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
    """Keeps ``checkpoints/best`` on the best value of ``metric`` (empty: `default_metric`)."""

    def __init__(self, run_dir: str | Path, metric: str = "") -> None:
        self.root = checkpoint_root(run_dir)
        self.metric = metric
        self.value: float | None = None
        rec = self._record()
        if rec and (not metric or rec.get("metric") == metric):
            self.metric, self.value = rec["metric"], float(rec["value"])

    def _record(self) -> dict[str, Any]:
        f = self.root / "best.json"
        try:
            rec = json.loads(read_text_no_follow(f)) if f.is_file() else {}
        except ValueError:  # SymlinkRefused is one: a planted link is ignored, never read
            log.warning(f"ignoring unreadable {f}")
            return {}
        return rec if isinstance(rec, dict) and "value" in rec and "metric" in rec else {}

    def better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.value is None:
            return True
        lower = self.metric.startswith("eval/nll/")
        return value < self.value if lower else value > self.value

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
        value = float(values[self.metric])
        folder = self.root / f"step_{step}"
        if not self.better(value) or not STEP.match(folder.name) or not folder.is_dir():
            return False
        rec = {"metric": self.metric, "value": value, "step": step, "checkpoint": folder.name}
        replace_text(self.root / "best.json", json.dumps(rec, indent=2) + "\n")
        write_pointer(self.root, "best", folder)
        self.value = value
        return True
