"""Run a function on N spawned ranks (gloo or NCCL) and collect what each returns.

A small copy of the test harness's idea (tests/ is not importable from the package): each rank
is a fresh ``spawn`` process with the torchrun-style environment and one intra-op thread, joined
through a `FileStore` in a private temporary folder; results or tracebacks come back as one
pickle per rank. Every process started here is joined or killed before returning.
"""

from __future__ import annotations

import multiprocessing as mp
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


class RankFailure(RuntimeError):
    """A rank raised, died without reporting, or outlived the timeout."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(
    rank: int,
    world: int,
    workdir: str,
    port: int,
    backend: str,
    fn: Callable[..., Any],
    args: tuple,
) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )  # fmt: skip
    out = Path(workdir) / f"rank_{rank}.pkl"
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        torch.manual_seed(rank)
        if backend == "nccl":
            torch.cuda.set_device(rank)
        store = dist.FileStore(str(Path(workdir) / "store"), world)
        dist.init_process_group(
            backend, store=store, rank=rank, world_size=world, timeout=timedelta(seconds=600)
        )
        payload = ("ok", fn(rank, world, *args))
        dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        payload = ("error", traceback.format_exc())
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(payload))
    os.replace(tmp, out)


def run_ranks(
    world: int, fn: Callable[..., Any], *args: Any, backend: str = "gloo", timeout: float = 600
) -> list[Any]:
    """``fn(rank, world, *args)`` on ``world`` ranks; return values by rank or raise
    `RankFailure` with the first failing rank's traceback. ``fn`` must be a top-level function
    of an importable module, ``args`` picklable."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="longseq-bench-ranks-") as workdir:
        port = _free_port()
        procs = [
            ctx.Process(
                target=_entry, args=(r, world, workdir, port, backend, fn, args), daemon=True
            )
            for r in range(world)
        ]
        results: dict[int, tuple[str, Any]] = {}
        try:
            for p in procs:
                p.start()
            deadline = time.monotonic() + timeout
            while len(results) < world and time.monotonic() < deadline:
                for r, p in enumerate(procs):
                    f = Path(workdir) / f"rank_{r}.pkl"
                    if r in results:
                        continue
                    if f.is_file():
                        results[r] = pickle.loads(f.read_bytes())
                    elif not p.is_alive():
                        results[r] = ("error", f"exited with code {p.exitcode} without reporting")
                if any(s == "error" for s, _ in results.values()):
                    break
                time.sleep(0.05)
        finally:
            for p in procs:
                if p.pid is None:
                    continue
                p.join(timeout=10.0 if len(results) == world else 0.5)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=10.0)
    for r in sorted(results):
        if results[r][0] == "error":
            raise RankFailure(f"rank {r} failed:\n{results[r][1]}")
    if len(results) < world:
        raise RankFailure(f"ranks {sorted(set(range(world)) - set(results))} timed out")
    return [results[r][1] for r in range(world)]
