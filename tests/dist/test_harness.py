"""The multi-process harness itself: results by rank, a failing rank's traceback, timeouts."""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist

from longseq.parallel.spawn import RankError, RankTimeout, run_ranks

pytestmark = pytest.mark.dist


def _all_reduce(rank: int, world: int, x: int) -> dict:
    t = torch.tensor([rank + x])
    dist.all_reduce(t)
    return {
        "sum": int(t),
        "rank": dist.get_rank(),
        "world": dist.get_world_size(),
        "backend": dist.get_backend(),
        "threads": torch.get_num_threads(),
        "env": (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_WORLD_SIZE"]),
        "rand": torch.rand(2),  # seeded identically on every rank
        "pid": os.getpid(),
    }


def _rank1_fails(rank: int, world: int) -> None:
    if rank == 1:
        raise ValueError("boom from the worker")
    dist.barrier()  # rank 0 would wait here forever (the gloo timeout is the harness timeout)


def _sleep(rank: int, world: int) -> None:
    time.sleep(600)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_values_come_back_in_rank_order():
    out = run_ranks(3, _all_reduce, 10, timeout=120)
    assert [o["rank"] for o in out] == [0, 1, 2]
    assert [o["sum"] for o in out] == [33, 33, 33]
    assert {o["backend"] for o in out} == {"gloo"}
    assert {o["threads"] for o in out} == {1}
    assert [o["env"] for o in out] == [("0", "3", "3"), ("1", "3", "3"), ("2", "3", "3")]
    assert all(torch.equal(o["rand"], out[0]["rand"]) for o in out)
    assert len({o["pid"] for o in out} | {os.getpid()}) == 4
    assert not any(_pid_alive(o["pid"]) for o in out)


def test_failing_rank_is_reraised_with_its_traceback_and_others_are_killed():
    t0 = time.monotonic()
    with pytest.raises(RankError, match=r"(?s)rank 1 failed.*ValueError: boom from the worker"):
        run_ranks(2, _rank1_fails, timeout=120)
    assert time.monotonic() - t0 < 60  # rank 0, stuck in the barrier, did not run to the timeout


def test_timeout_kills_the_ranks():
    t0 = time.monotonic()
    with pytest.raises(RankTimeout, match=r"ranks \[0, 1\]"):
        run_ranks(2, _sleep, timeout=3)
    assert time.monotonic() - t0 < 30
    assert not [p for p in torch.multiprocessing.active_children() if p.name.startswith("rank")]


def test_rejects_an_empty_world():
    with pytest.raises(ValueError, match="world_size"):
        run_ranks(0, _sleep)
