"""`MetricsProcessor`: what the training loop logs, and when (torchtitan's ``MetricsProcessor``
is the model: the loop hands it each step's output and asks it to log at log steps).

It owns a window of steps: the step counters (`longseq.train.task.STEP_COUNTERS`) summed into
named `Counters`, the training AUC/NE states and the clock. At a log step it sums the window
over the ranks in one all-reduce (which also carries each rank's reader position and preemption
flag), turns the sums into the logged values, writes them to the metrics backends
(`longseq.train.logging.MetricsLogger`) and the progress display, and starts a new window.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from longseq.train.counters import Counters
from longseq.train.optim import learning_rates, lr_factor
from longseq.train.progress import Progress
from longseq.train.task import STEP_COUNTERS, step_counters
from longseq.train.train_metrics import peak_memory_mib

if TYPE_CHECKING:
    from longseq.train.setup import TrainState

#: Step counters summed as they are (the losses are summed weighted by the step's targets).
_SUMMED = tuple(n for n in STEP_COUNTERS if n not in ("loss", "aux_loss"))
#: The window's counters: the step counters' sums over the window's steps, this rank's requests
#: read since the start of the run (at the log step) and its preemption flag. All are summed
#: over the ranks at a log step.
WINDOW_COUNTERS = ("loss_sum", "aux_loss_sum", *_SUMMED, "requests_seen", "preempted")


class MetricsProcessor:
    """Accumulates, reduces and logs the training values of one run (every rank; only rank 0
    writes). ``values`` holds the latest logged values (``{}`` before the first log step).

    Args:
        s: what `longseq.train.setup.build` built (config, optimizer, stream, logger, training
            AUC/NE, preemption handler, start step).
    """

    def __init__(self, s: TrainState) -> None:
        tc = s.cfg.trainer
        self.s = s
        self.log_every, self.max_steps = tc.log_every, tc.max_steps
        self.progress = Progress(s.start, tc.max_steps, s.env.is_main, tc.progress)
        self.counters = Counters(WINDOW_COUNTERS)
        self.values: dict[str, Any] = {}
        # The first window starts at the first step: drop any gradient norm the optimizer
        # counted before it (a resume's `init_state` takes one zero-gradient step to create the
        # optimizer states, which would otherwise be averaged into the first logged grad_norm).
        s.optimizer.pop_grad_norm()
        self.t0 = time.perf_counter()

    def record(
        self, counters: torch.Tensor, predictions: tuple[torch.Tensor, torch.Tensor] | None
    ) -> None:
        """Add one trained step: its `STEP_COUNTERS` tensor and its ``(probs, labels)``."""
        c = step_counters(counters)
        self.counters.add("loss_sum", c["loss"] * c["targets"])
        self.counters.add("aux_loss_sum", c["aux_loss"] * c["targets"])
        for name in _SUMMED:
            self.counters.add(name, c[name])
        if self.s.rec_metrics is not None and predictions is not None:
            self.s.rec_metrics.update(*predictions)
        self.progress.update()

    def should_log(self, done: int) -> bool:
        """Whether step ``done`` (steps done so far) is a log step: every ``trainer.log_every``
        steps and the last one."""
        return done % self.log_every == 0 or done == self.max_steps

    def log(self, done: int) -> bool:
        """Log the window ending at step ``done`` and start a new one (collective: the counters'
        all-reduce and the training AUC/NE gather). Returns whether any rank was preempted."""
        s = self.s
        # exact, across resumes: rows of the batches trained so far (not the prefetched ones)
        reader = s.stream.position_after(done - s.start)["reader"]
        self.counters.set("requests_seen", reader["rows_emitted"])
        self.counters.set("preempted", s.preemption.local())
        self.counters.reduce(s.env.device)
        self.values = self._values(done - 1, time.perf_counter() - self.t0)
        s.logger.log(done, self.values)
        self.progress.logged(done, self.values)
        preempted = self.counters["preempted"] > 0
        self.counters.zero()
        self.t0 = time.perf_counter()
        return preempted

    def _values(self, step: int, dt: float) -> dict[str, Any]:
        """The logged values of the window whose last step is ``step`` (0-based), ``dt`` seconds
        long (collective: the training AUC/NE gather)."""
        s, c = self.s, self.counters.as_dict()
        tc = s.cfg.trainer
        targets = max(c["targets"], 1)
        values: dict[str, Any] = {
            "loss": c["loss_sum"] / targets,
            "lr": tc.dense.lr * lr_factor(step, tc.max_steps, tc.dense),
            **learning_rates(s.optimizer),
            "targets_per_s": c["targets"] / dt,
            "requests_per_s": c["requests"] / dt,
            "tokens_per_s": (c["hist_ids"] + c["targets"]) / dt,
            "input_ids_per_target": c["input_ids"] / targets,
            "hist_ids_per_target": c["hist_ids"] / targets,
            "requests_seen": int(c["requests_seen"]),
        }
        if c["aux_loss_sum"]:  # the model's auxiliary loss (STCA's co-occurrence loss)
            values["aux_loss"] = c["aux_loss_sum"] / targets
        grad_norm = s.optimizer.pop_grad_norm()
        if grad_norm is not None:
            values["grad_norm"] = grad_norm
        if s.rec_metrics is not None:
            values.update(s.rec_metrics.compute())
        values.update(peak_memory_mib(s.env.device))
        return values

    def close(self) -> None:
        """Close the progress display (the metrics logger is closed by its owner, the loop,
        after the end-of-training callbacks have logged)."""
        self.progress.close()
