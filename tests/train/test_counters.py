"""`Counters` (named sums in one tensor) and the step counters `TrainTask` returns."""

from __future__ import annotations

import pytest
import torch

from longseq.train.counters import Counters
from longseq.train.task import STEP_COUNTERS, step_counters


def test_counters_add_set_read_and_zero_by_name():
    c = Counters(("loss_sum", "targets", "seen"))
    c.add("targets", 3)
    c.add("targets", 4.5)
    c.add("loss_sum", 0.25)
    c.set("seen", 10)
    c.set("seen", 12)  # set replaces, add sums
    assert c["targets"] == 7.5 and c["seen"] == 12.0
    assert c.as_dict() == {"loss_sum": 0.25, "targets": 7.5, "seen": 12.0}
    assert c.values.dtype == torch.float64 and c.values.shape == (3,)
    c.zero()
    assert c.as_dict() == {"loss_sum": 0.0, "targets": 0.0, "seen": 0.0}


def test_counters_keep_float64_sums_exact_beyond_float32():
    c = Counters(("n",))
    c.add("n", 2**24)
    c.add("n", 1)  # float32 would round this away
    assert c["n"] == 2**24 + 1


def test_counters_name_the_unknown_counter_and_refuse_bad_names():
    c = Counters(("targets",))
    with pytest.raises(KeyError, match=r"no counter 'tagets'.*\['targets'\]"):
        c.add("tagets", 1)
    with pytest.raises(ValueError, match=r"duplicate names \['a'\]"):
        Counters(("a", "b", "a"))
    with pytest.raises(ValueError, match="at least one name"):
        Counters(())


def test_reduce_without_a_process_group_keeps_the_values():
    c = Counters(("a", "b"))
    c.add("a", 2)
    c.reduce()
    assert c.as_dict() == {"a": 2.0, "b": 0.0}


def test_step_counters_reads_the_task_tensor_by_name():
    t = torch.tensor([0.5, 16, 2, 100, 140, 0.25], dtype=torch.float64)
    assert step_counters(t) == dict(zip(STEP_COUNTERS, [0.5, 16.0, 2.0, 100.0, 140.0, 0.25]))
    with pytest.raises(ValueError, match="step counters"):
        step_counters(t[:4])


def _reduce_worker(rank: int, world: int) -> dict[str, float]:
    c = Counters(("targets", "flag"))
    c.add("targets", 10 * (rank + 1))
    c.set("flag", 1.0 if rank == 1 else 0.0)
    c.reduce(torch.device("cpu"))
    return c.as_dict()


@pytest.mark.dist
def test_reduce_sums_every_counter_over_two_gloo_ranks():
    from longseq.parallel.spawn import run_ranks

    out = run_ranks(2, _reduce_worker, timeout=120)
    assert out == [{"targets": 30.0, "flag": 1.0}] * 2
