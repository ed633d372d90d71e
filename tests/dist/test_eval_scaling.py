"""Distributed evaluation metrics (`longseq.eval.dist_metrics`) on 1, 2 and 3 spawned gloo ranks
equal the one-process `window_metrics` bit for bit: random targets dealt over the ranks without
regard to users (each user's targets on several ranks), heavy score ties (across splitter
boundaries), all scores equal, empty ranks, users with one label class, a task without positives.

One spawn per world size runs every case (process start-up dominates the time; the ranks import
neither the model nor TorchRec).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist

from longseq.eval.predict import Predictions
from longseq.eval.window import window_metrics
from longseq.parallel.spawn import run_ranks

pytestmark = pytest.mark.dist

TASKS = ["click", "buy"]
CASES = ("ties", "continuous", "all_equal", "empty_rank0", "few")


def make_case(name: str) -> Predictions:
    """The predictions of one case (one process's view: every target)."""
    rng = np.random.default_rng(CASES.index(name))
    n_req = {"few": 3, "all_equal": 200}.get(name, 700)
    per = rng.integers(1, 6, n_req)  # targets per request
    n = int(per.sum())
    users = rng.integers(-50, 120, n_req) * 7919  # negative and large ids, many per user
    request_id = np.repeat(rng.permutation(n_req) + 10**12, per)
    if name == "continuous":
        scores = rng.random((n, 2)).astype(np.float32)
    elif name == "all_equal":
        scores = np.full((n, 2), 0.5, dtype=np.float32)
    else:  # few values: ties within users, across users and across splitters
        scores = rng.choice(np.array([0.1, 0.2, 0.25, 0.5, 0.9], np.float32), (n, 2))
    labels = (rng.random((n, 2)) < 0.2 + 0.6 * scores).astype(np.float32)
    if name == "few":
        labels[:, 1] = 0.0  # a task without positives
    labels[np.repeat(users % 5 == 0, per), 0] = 1.0  # users with one label class
    return Predictions(
        request_id=request_id,
        user_id=np.repeat(users, per),
        target_index=np.concatenate([np.arange(k) for k in per]),
        labels=labels,
        scores=scores,
        served_len=np.repeat(rng.integers(1, 500, n_req), per),
        batch_index=np.repeat(np.arange(n_req) // 8, per),
    )


def rank_share(p: Predictions, name: str, rank: int, world: int) -> Predictions:
    """This rank's targets: whole requests dealt at random (rank 0 none in ``empty_rank0``)."""
    rng = np.random.default_rng(world)
    req_rank = rng.integers(1 if name == "empty_rank0" and world > 1 else 0, world, 10**6)
    keep = req_rank[(p.request_id - 10**12) % 10**6] == rank
    return Predictions(**{k: v[keep] for k, v in vars(p).items()})


def _work(rank: int, world: int) -> dict:
    from longseq.eval.dist_metrics import allreduce_exact, dist_window_metrics, exchange

    out = {}
    for name in CASES:
        out[name] = dist_window_metrics(rank_share(make_case(name), name, rank, world), TASKS)
    real = dist.get_backend
    dist.get_backend = lambda group=None: "nccl"  # as on GPU machines: a gloo group of its own
    try:
        out["own_group"] = dist_window_metrics(
            rank_share(make_case("ties"), "ties", rank, world), TASKS
        )
    finally:
        dist.get_backend = real
    bad = rank_share(make_case("ties"), "ties", rank, world)
    if rank == world - 1:
        bad.scores[:1] = np.nan
    try:
        dist_window_metrics(bad, TASKS)
    except ValueError as e:
        out["nan"] = str(e)
    big = [(rank + 1) << 2000, -(3**700) * (rank + 1), rank - 1, 0]
    out["allreduce"] = allreduce_exact(big)
    dest = np.arange(7) % world
    vals = np.arange(7) * 10 + rank
    got = exchange(dest, [vals, np.stack([vals, -vals], 1).astype(np.float32)])
    out["exchange"] = [g.tolist() for g in got]
    t = torch.ones(1)
    dist.all_reduce(t)
    return out


def _canon(rows: list[dict]) -> str:
    return json.dumps(rows, sort_keys=True)  # NaN == NaN, 1 != 1.0


@pytest.fixture(scope="module", params=[1, 2, 3])
def ranks(request) -> tuple[int, list[dict]]:
    return request.param, run_ranks(request.param, _work, timeout=180)


@pytest.mark.parametrize("name", CASES)
def test_equals_one_process_bit_for_bit(ranks, name):
    world, out = ranks
    want = window_metrics(make_case(name), TASKS)
    for rank in range(world):
        assert _canon(out[rank][name]) == _canon(want), (world, rank)


def test_a_gloo_group_of_its_own_beside_nccl(ranks):
    world, out = ranks
    for rank in range(world):
        assert _canon(out[rank]["own_group"]) == _canon(out[rank]["ties"])


def test_a_nan_on_one_rank_is_an_error_on_every_rank(ranks):
    world, out = ranks
    for rank in range(world):
        where = "this" if rank == world - 1 else "another"
        assert (
            out[rank]["nan"] == f"scores or labels contain NaN or inf ({where} rank's predictions)"
        )


def test_the_cases_cover_what_they_claim():
    few = window_metrics(make_case("few"), TASKS)
    assert np.isnan(few[1]["auc"]) and np.isnan(few[1]["calibration"])
    ties = window_metrics(make_case("ties"), TASKS)[0]
    assert ties["gauc_users_excluded"] > 0 and ties["gauc_users"] > 0
    p = make_case("ties")
    shares = [rank_share(p, "ties", r, 2) for r in range(2)]
    both = set(shares[0].user_id.tolist()) & set(shares[1].user_id.tolist())
    assert len(both) > 10  # users split over ranks
    assert rank_share(make_case("empty_rank0"), "empty_rank0", 0, 3).request_id.size == 0


def test_exact_allreduce_and_exchange(ranks):
    world, out = ranks
    tot = world * (world + 1) // 2
    want = [tot << 2000, -(3**700) * tot, tot - 2 * world, 0]
    for rank in range(world):
        assert out[rank]["allreduce"] == want
        vals, pairs = out[rank]["exchange"]
        mine = [i * 10 + s for s in range(world) for i in range(7) if i % world == rank]
        assert vals == mine  # by source rank, each in the sender's order
        assert pairs == [[v, -v] for v in mine]
