"""``trainer.profile=true``: a torch.profiler trace of a few training steps.

Traces go to ``<run_dir>/profile/`` (one Chrome-trace JSON per rank, open in
https://ui.perfetto.dev or chrome://tracing), and rank 0 logs the top operators by time.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from longseq.log import get_logger

log = get_logger("longseq.train")


class StepProfiler:
    """Profiles steps ``wait + warmup .. wait + warmup + active`` after the first step."""

    def __init__(self, run_dir: str, rank: int, wait: int = 2, warmup: int = 1, active: int = 3):
        self.out = Path(run_dir) / "profile"
        self.rank = rank
        self.out.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self.prof = profile(
            activities=activities,
            schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=self._save,
            record_shapes=True,
        )

    def _save(self, prof: profile) -> None:
        path = self.out / f"trace_rank{self.rank}_step{prof.step_num}.json"
        prof.export_chrome_trace(str(path))
        if self.rank == 0:
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            log.info(f"profiler trace: {path}\n{table}")

    def __enter__(self) -> StepProfiler:
        self.prof.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.prof.__exit__(*exc)

    def step(self) -> None:
        self.prof.step()


def maybe_profiler(enabled: bool, run_dir: str, rank: int) -> AbstractContextManager:
    """A `StepProfiler` when ``enabled``, else a no-op context with a ``step()``."""
    if enabled:
        return StepProfiler(run_dir, rank)

    return _NoProfiler()


class _NoProfiler(nullcontext):
    """No-op stand-in with the `StepProfiler` interface."""

    def __enter__(self) -> _NoProfiler:
        return self

    def step(self) -> None:
        pass
