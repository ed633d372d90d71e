"""Evaluation during training, as a callback that runs the offline evaluation code.

At every ``eval_every`` steps that coincide with a checkpoint (and at the end when
``eval_at_end``), all training ranks evaluate that checkpoint together exactly as
``torchrun -m longseq.eval`` would (batches dealt over the ranks, metrics computed by all ranks
together without gathering predictions, `longseq.eval.dist_metrics`), rank 0 writes
``<run_dir>/eval/step_<n>/`` (the final one also to ``<run_dir>/eval/``) and logs
``eval/auc/<task>@<window>`` etc. to ``metrics.jsonl``. Each evaluated checkpoint is also a
candidate for ``checkpoints/best`` (`longseq.train.best`, ``trainer.best_metric``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch.distributed as dist

from longseq.eval.config import EvalConfig, EvalDataConfig
from longseq.train.callbacks import LoopState


class EvalCallback:
    """Offline evaluation of the checkpoints the loop writes.

    Args:
        data_path: data set folder (its ``split`` is evaluated).
        windows: served windows (empty: the full stored history).
        every: evaluate checkpoints whose step is a multiple of this (0: never mid-run).
        at_end: evaluate the final checkpoint.
        split / batch_size: what to evaluate and how many requests per batch.
        best_metric: the logged key that picks ``checkpoints/best`` (empty: the default of
            `longseq.train.best.default_metric`).
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
    ) -> None:
        self.data_path, self.windows = data_path, list(windows)
        self.every, self.at_end, self.split, self.batch_size = every, at_end, split, batch_size
        self.logger, self.rank = logger, rank
        self._done: set[int] = set()
        self.best = None
        if run_dir is not None and rank == 0:
            from longseq.train.best import BestTracker

            self.best = BestTracker(run_dir, best_metric)

    def _run(self, state: LoopState, final: bool) -> None:
        if state.checkpoint is None:
            return
        out = Path(state.run_dir) / "eval" / f"step_{state.step}"
        if state.step not in self._done:
            self._evaluate(state, out)  # collective: every rank scores its share of the batches
        if self.rank == 0 and final:  # the final numbers also live at <run_dir>/eval/
            for name in ("eval.json", "eval.md", "auc_vs_window.png"):
                if (out / name).exists():
                    shutil.copy(out / name, Path(state.run_dir) / "eval" / name)
        self._done.add(state.step)
        if dist.is_initialized():
            dist.barrier()

    def _evaluate(self, state: LoopState, out: Path) -> None:
        from longseq.eval.evaluate import evaluate_validated

        assert state.checkpoint is not None  # on_checkpoint returned before without one
        cfg = EvalConfig(
            checkpoint=state.checkpoint,
            out=str(out),
            windows=self.windows,
            progress=False,
            data=EvalDataConfig(path=self.data_path, split=self.split, batch_size=self.batch_size),
        )
        # settings checked once, by the training job's TrainJobConfig.validate (trainer.eval_*)
        result = evaluate_validated(cfg)  # over the training ranks; rank 0 gets the result
        values = {}
        if self.rank == 0:
            for r in result["results"]:
                key = f"{r['task']}@{r['window']}"
                values[f"eval/auc/{key}"] = r["auc"]
                values[f"eval/gauc/{key}"] = r["gauc"]
                values[f"eval/nll/{key}"] = r["nll"]
        if self.rank == 0 and self.logger is not None:
            self.logger.log(state.step, values)
        if self.rank == 0 and self.best is not None:
            self.best.update(state.step, values, result["results"])

    def on_step_end(self, state: LoopState) -> None:
        if self.every > 0 and state.step % self.every == 0:
            self._run(state, final=False)

    def on_train_end(self, state: LoopState) -> None:
        if self.at_end:
            self._run(state, final=True)
