"""Run a function on N ranks in spawned processes and collect what each rank returns.

The reusable multi-process harness of the tests (tests/dist/) and the benchmarks (the RLB
all-to-all accounting). ::

    from longseq.parallel.spawn import run_ranks

    def _work(rank: int, world_size: int, x: int) -> int:  # top level: it is pickled by name
        t = torch.tensor([rank + x])
        dist.all_reduce(t)
        return int(t)

    assert run_ranks(2, _work, 10) == [21, 21]

Each rank is a fresh ``spawn`` process with deterministic settings (``torch.manual_seed(seed)``,
NumPy seeded, one intra-op thread) and the torchrun-style environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``) that TorchRec/longseq read.
The default process group (gloo, or NCCL with ``backend="nccl"``, one GPU per rank) runs over a
`FileStore` in a private temporary folder (no port to
race for). Results and tracebacks come back through one pickle file per rank. When a rank fails,
the others are given a short grace period and then killed (they are usually blocked in a
collective), and `RankError` re-raises the failing rank's traceback in the parent, naming the rank.
Processes still alive at ``timeout`` are killed and reported with `RankTimeout`. The temporary
folder and every started process are always cleaned up.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

__all__ = ["RankError", "RankTimeout", "run_ranks"]

#: Seconds the surviving ranks get to finish after a rank failed, before they are killed.
FAILURE_GRACE_S = 3.0


class RankError(RuntimeError):
    """A rank raised (its traceback is in the message) or died without reporting."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(f"rank {rank} failed:\n{message}")
        self.rank = rank


class RankTimeout(TimeoutError):
    """Ranks still running at the timeout (they were killed)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(
    rank: int,
    world_size: int,
    workdir: str,
    port: int,
    seed: int,
    timeout: float,
    backend: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    """Child: set up, run ``fn``, write ``(status, value or traceback, time)`` for the parent."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    out = Path(workdir) / f"rank_{rank}.pkl"
    dist: Any = None  # torch.distributed once imported
    try:
        import numpy as np
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        torch.manual_seed(seed)
        np.random.seed(seed)
        if backend == "nccl":
            torch.cuda.set_device(rank)
        store = dist.FileStore(str(Path(workdir) / "store"), world_size)
        dist.init_process_group(
            backend,
            store=store,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout),
        )
        value = fn(rank, world_size, *args)
        payload = ("ok", value, time.time())
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        payload = ("error", traceback.format_exc(), time.time())
    try:
        data = pickle.dumps(payload)
    except Exception:  # an unpicklable return value is a failure of this rank too
        msg = "return value not picklable:\n" + traceback.format_exc()
        data = pickle.dumps(("error", msg, time.time()))
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)  # the parent never sees a half-written result
    if dist is not None and dist.is_initialized():
        dist.destroy_process_group()


def run_ranks(
    world_size: int,
    fn: Callable[..., Any],
    *args: Any,
    timeout: float = 120.0,
    seed: int = 0,
    backend: str = "gloo",
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` ranks; return values by rank.

    ``fn`` and ``args`` must be picklable (``fn`` a top-level function of an importable module).
    Raises `RankError` with the traceback of the rank that failed first (the others are then
    killed; their own errors are usually consequences), `RankTimeout` when ranks outlive
    ``timeout`` seconds. ``timeout`` includes process start-up (a few seconds to import torch).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="longseq-ranks-") as workdir:
        port = _free_port()
        procs = [
            ctx.Process(
                target=_entry,
                args=(r, world_size, workdir, port, seed, timeout, backend, fn, args),
                name=f"rank{r}",
                daemon=True,
            )
            for r in range(world_size)
        ]
        results: dict[int, tuple[str, Any, float]] = {}
        failed_at: float | None = None
        try:
            for p in procs:
                p.start()
            deadline = time.monotonic() + timeout
            while True:
                for r, p in enumerate(procs):
                    f = Path(workdir) / f"rank_{r}.pkl"
                    if r not in results and f.is_file():
                        results[r] = pickle.loads(f.read_bytes())
                    dead_silent = r not in results and not p.is_alive() and not f.is_file()
                    if dead_silent:
                        msg = f"process exited with code {p.exitcode} without reporting"
                        results[r] = ("error", msg, time.time())
                    if failed_at is None and results.get(r, ("ok",))[0] == "error":
                        failed_at = time.monotonic()
                if len(results) == world_size:
                    break
                now = time.monotonic()
                if failed_at is not None and now - failed_at > FAILURE_GRACE_S:
                    break
                if now > deadline:
                    break
                time.sleep(0.05)
        finally:
            for p in procs:
                if p.pid is None:
                    continue
                p.join(timeout=5.0 if p.is_alive() and len(results) == world_size else 0.0)
                if p.is_alive():
                    p.kill()
                p.join(timeout=10.0)
        errors = sorted((t, r) for r, (status, _, t) in results.items() if status == "error")
        if errors:  # the earliest failure; later ones are usually its consequences
            first = errors[0][1]
            raise RankError(first, results[first][1])
        missing = [r for r in range(world_size) if r not in results]
        if missing:
            raise RankTimeout(f"ranks {missing} still running after {timeout:.0f}s (killed)")
        return [results[r][1] for r in range(world_size)]
