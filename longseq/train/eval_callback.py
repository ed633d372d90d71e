"""Evaluation during training, as a callback that runs the offline evaluation code.

At every ``eval_every`` steps that coincide with a checkpoint, all training ranks evaluate that
checkpoint on the selection split (``valid`` by default) exactly as ``torchrun -m longseq.eval``
would (batches dealt over the ranks, metrics computed by all ranks together without gathering
predictions, `longseq.eval.dist_metrics`); rank 0 writes ``<run_dir>/eval/step_<n>/`` and logs
``eval/auc/<task>@<window>`` etc. to ``metrics.jsonl``. Each such checkpoint is a candidate for
``checkpoints/best`` (`longseq.train.best`, ``trainer.best_metric``), and after
``early_stop_patience`` evaluations in a row without a new best the callback asks the loop to
stop (``LoopState.stop``; every rank gets rank 0's decision).

At the end (``eval_at_end``) the ranks evaluate ``checkpoints/best`` (the final checkpoint when
no evaluation picked one) on ``eval_split``: ``<run_dir>/eval/`` holds the result and
``metrics.jsonl`` gets ``<eval_split>/auc/<task>@<window>`` etc. and ``<eval_split>/step`` (the
evaluated checkpoint's step).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist

from longseq.eval.config import EvalConfig, EvalDataConfig
from longseq.log import get_logger
from longseq.train.callbacks import LoopState

log = get_logger("longseq.train")
_FILES = ("eval.json", "eval.md", "auc_vs_window.png")


class EvalCallback:
    """Offline evaluation of the checkpoints the loop writes.

    Args:
        data_path: data set folder.
        windows: served windows (empty: the full stored history).
        every: evaluate checkpoints whose step is a multiple of this on ``select_split``
            (0: never mid-run).
        at_end: evaluate ``checkpoints/best`` (else the final checkpoint) on ``split``.
        split / batch_size: the split of the final evaluation, requests per batch.
        select_split: the split of the mid-run evaluations (what ``best`` is chosen on).
        patience: stop after this many mid-run evaluations without a new best (0: never).
        best_metric: the logged key that picks ``checkpoints/best`` (empty: the default of
            `longseq.train.best.default_metric`).
        start: the step the run starts at (a resumed run's early-stopping state is the one
            recorded up to it).
    """

    def __init__(
        self,
        data_path: str,
        windows: list[int],
        every: int = 0,
        at_end: bool = True,
        split: str = "test",
        batch_size: int = 64,
        logger=None,
        rank: int = 0,
        best_metric: str = "",
        run_dir: str | None = None,
        select_split: str | None = None,
        patience: int = 0,
        start: int = 0,
    ) -> None:
        self.data_path, self.windows = data_path, list(windows)
        self.every, self.at_end, self.split, self.batch_size = every, at_end, split, batch_size
        self.select_split = select_split or split
        self.patience = patience
        self.logger, self.rank = logger, rank
        self._done: set[int] = set()  #: steps evaluated on select_split by this process
        self.best = None
        if run_dir is not None and rank == 0:
            from longseq.train.best import BestTracker

            self.best = BestTracker(run_dir, best_metric, start)

    def _evaluate(self, checkpoint: str, split: str, out: Path) -> tuple[dict, list]:
        """Evaluate ``checkpoint`` on ``split`` into ``out`` (collective): rank 0 gets
        ``({"<metric>/<task>@<window>": value}, result rows)``."""
        from longseq.eval.evaluate import evaluate_validated

        cfg = EvalConfig(
            checkpoint=checkpoint,
            out=str(out),
            windows=self.windows,
            progress=False,
            data=EvalDataConfig(path=self.data_path, split=split, batch_size=self.batch_size),
        )
        # settings checked once, by the training job's TrainJobConfig.validate (trainer.eval_*)
        result = evaluate_validated(cfg)  # over the training ranks; rank 0 gets the result
        values: dict[str, Any] = {}
        if self.rank != 0:
            return values, []
        for r in result["results"]:
            key = f"{r['task']}@{r['window']}"
            values[f"auc/{key}"] = r["auc"]
            values[f"gauc/{key}"] = r["gauc"]
            values[f"nll/{key}"] = r["nll"]
        return values, result["results"]

    def _select(self, state: LoopState) -> str | None:
        """Mid-run evaluation of this step's checkpoint; returns rank 0's reason to stop."""
        out = Path(state.run_dir) / "eval" / f"step_{state.step}"
        assert state.checkpoint is not None  # called only for a step that wrote one
        values, rows = self._evaluate(state.checkpoint, self.select_split, out)
        self._done.add(state.step)
        if self.rank != 0:
            return None
        logged = {f"eval/{k}": v for k, v in values.items()}
        if self.logger is not None:
            self.logger.log(state.step, logged)
        if self.best is None:
            return None
        self.best.update(state.step, logged, rows)
        b = self.best
        if self.patience and b.since_best >= self.patience:
            return (
                f"early stop at step {state.step}: {b.metric} on {self.select_split} has not "
                f"improved for {b.since_best} evaluations (trainer.early_stop_patience="
                f"{self.patience}; best {b.value:.4f} at step {b.step})"
            )
        return None

    def on_step_end(self, state: LoopState) -> None:
        if self.every <= 0 or state.step % self.every or state.checkpoint is None:
            return
        reason = self._select(state)
        if dist.is_initialized():  # also waits for rank 0's files
            box = [reason]
            dist.broadcast_object_list(box, src=0)
            reason = box[0]
        if reason:
            state.stop = reason

    def _final_checkpoint(self, state: LoopState) -> str | None:
        """``checkpoints/best`` as rank 0 knows it, else the final checkpoint (every rank)."""
        best = self.best.best_checkpoint() if self.best is not None else None
        box = [str(best) if best is not None else state.checkpoint]
        if dist.is_initialized():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_train_end(self, state: LoopState) -> None:
        if not self.at_end:
            return
        checkpoint = self._final_checkpoint(state)
        if checkpoint is None:
            return
        step = int(Path(checkpoint).name.removeprefix("step_"))
        root = Path(state.run_dir) / "eval"
        values, _ = self._evaluate(checkpoint, self.split, root / f"{self.split}_step_{step}")
        if self.rank == 0:
            for name in _FILES:  # the final numbers live at <run_dir>/eval/
                if (root / f"{self.split}_step_{step}" / name).exists():
                    shutil.copy(root / f"{self.split}_step_{step}" / name, root / name)
            logged = {f"{self.split}/{k}": v for k, v in values.items()}
            logged[f"{self.split}/step"] = step
            if self.logger is not None:
                self.logger.log(state.step, logged)
            log.info(f"final evaluation: {checkpoint} on {self.split}")
        if dist.is_initialized():
            dist.barrier()
