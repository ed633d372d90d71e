"""Timing (warm-up, round-robin repetitions, median), log-log fits and memory measures.

Plain torch only; ``torch.cuda.synchronize`` around every timed call on CUDA.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch


def sync(device: torch.device) -> None:
    """Wait for queued device work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds of each timed repetition and their median (the reported figure)."""

    median_s: float
    reps_s: list[float]

    @property
    def min_s(self) -> float:
        """The fastest repetition: the least-disturbed one on a shared machine."""
        return min(self.reps_s)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_interleaved(
    fns: dict[str, Callable[[], Any]], reps: int, warmup: int, device: torch.device
) -> dict[str, Timing]:
    """Time several functions round-robin (one repetition of each in turn, the order reversed
    every other round), so slow drifts of a shared machine and position effects hit all of them
    alike; ``warmup`` untimed calls of each first."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            fn = fns[name]
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: Timing(statistics.median(v), v) for k, v in times.items()}


def measure(fn: Callable[[], Any], reps: int, warmup: int, device: torch.device) -> Timing:
    """Median of ``reps`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    return measure_interleaved({"fn": fn}, reps, warmup, device)["fn"]


def time_once(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of one call (used to skip configurations that would take too long)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """Slope of ``log y`` against ``log x`` (least squares); None with fewer than 2 points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def saved_activation_bytes(
    fn: Callable[[], torch.Tensor], exclude: list[torch.Tensor] | None = None
) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs (its
    activations; ``exclude`` e.g. the parameters). Device-independent: the CPU memory measure."""
    skip = {t.untyped_storage().data_ptr() for t in exclude or []}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in skip:
                seen[ptr] = max(seen.get(ptr, 0), st.nbytes())
        except (RuntimeError, NotImplementedError):  # tensors without storage
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def cuda_peak_bytes(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Peak allocated bytes above the starting level while ``fn`` runs (None off CUDA)."""
    if device.type != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device) - base)
