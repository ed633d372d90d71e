"""The trainer's input stream: equal full batches on every rank, token-budget batching, config
errors, positions of older versions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longseq.data.config import DataConfig
from longseq.data.reader import RequestReader
from longseq.data.stream import build_train_stream

CPU = torch.device("cpu")


def _stream(data, rank=0, world=1, seed=0, **kw):
    cfg = DataConfig(path=str(data), **{"batch_size": 8, "shuffle_buffer": 16, **kw})
    return build_train_stream(cfg, rank, world, seed, ["click"], CPU)


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_every_rank_has_a_full_batch_at_every_step(tiny_data, tiny_meta, world):
    """The collective guarantee: for any number of steps, every rank yields a batch of exactly
    batch_size requests (no epoch tail), and rank epochs are at most one request apart."""
    total = tiny_meta["num_requests"]["train"]
    steps = 3 * total // (8 * world) + 2  # about three epochs of each rank's share
    shares = []
    for rank in range(world):
        s = _stream(tiny_data, rank, world)
        sizes = [b.batch_size for b in itertools.islice(s, steps)]
        assert sizes == [8] * steps
        pos = s.position_after(steps)["reader"]
        assert pos["rows_emitted"] == 8 * steps and pos["epoch"] >= 2
        shares.append(RequestReader(tiny_data / "train", 8, rank, world).num_rows())
    assert sum(shares) == total and max(shares) - min(shares) <= 1


@settings(max_examples=12, deadline=None)
@given(max_tokens=st.integers(1, 2000), pointwise=st.booleans(), seed=st.integers(0, 3))
def test_token_budget_bounds_tokens_and_keeps_the_row_order(
    tiny_data, tiny_meta, max_tokens, pointwise, seed
):
    cfg = DataConfig(path=str(tiny_data), batch_size=8, shuffle_buffer=16,
                     max_tokens=max_tokens, pointwise=pointwise)  # fmt: skip
    cfg.window.mode = "beta"
    cfg.window.l_min, cfg.window.l_avg, cfg.window.l_max = 8, 40, 128
    s = build_train_stream(cfg, 0, 1, seed, ["click"], CPU)
    ids = []
    for b in itertools.islice(s, 25):
        hist = b.history_lengths()  # per row (pointwise: per target row)
        assert b.batch_size >= 1
        rows = b.request_ids.tolist()
        req = rows[:: tiny_meta["targets_per_request"]] if pointwise else rows
        assert 1 <= len(req) <= 8
        assert int(hist.sum()) <= max_tokens or len(req) == 1
        ids += req
    # batching never reorders the reader's row stream
    plain = _stream(tiny_data, seed=seed)
    rows = [i for b in itertools.islice(plain, len(ids)) for i in b.request_ids.tolist()]
    assert ids == rows[: len(ids)]


def test_token_budget_batches_are_about_constant(tiny_data):
    """With a budget, served tokens per batch vary less than with a fixed request count."""
    fixed = _stream(tiny_data, batch_size=8)
    budget = _stream(tiny_data, batch_size=64, max_tokens=800)
    t_fixed = [int(b.history_lengths().sum()) for b in itertools.islice(fixed, 30)]
    t_budget = [int(b.history_lengths().sum()) for b in itertools.islice(budget, 30)]
    assert max(t_budget) <= 800
    cv = [np.std(t) / np.mean(t) for t in (t_fixed, t_budget)]
    assert cv[1] < cv[0], cv


def test_position_of_an_older_version_resumes_at_its_epoch(tiny_data):
    s = _stream(tiny_data)
    old = {
        "reader": {"epoch": 1, "batches_emitted": 3, "rows_emitted": 24},
        "rng": np.random.default_rng([0, 0, 0]).bit_generator.state,
    }
    with pytest.warns(UserWarning, match="older longseq"):
        s.load_position(old)
    b = next(s)
    assert s.position_after(1)["reader"]["rows_emitted"] == 32
    epoch1 = RequestReader(tiny_data / "train", 8, shuffle_buffer=16)
    epoch1.epoch = 1
    assert b.request_ids.tolist() == next(iter(epoch1)).column("request_id").to_pylist()


def test_config_errors_name_the_key(tiny_data):
    # checked once, by the job's entry point (TrainJobConfig.validate -> DataConfig.validate)
    for key, value in [("num_workers", -1), ("max_tokens", -5), ("batch_size", 0),
                       ("prefetch_factor", 0), ("on_bad_row", "maybe")]:  # fmt: skip
        cfg = DataConfig(path=str(tiny_data), **{"batch_size": 8, key: value})
        with pytest.raises(ValueError, match=f"data.{key}"):
            cfg.validate()
    with pytest.raises(ValueError, match="cannot feed"):
        _stream(tiny_data, rank=0, world=200)


def test_load_position_after_iterating_is_refused(tiny_data):
    s = _stream(tiny_data)
    next(s)
    with pytest.raises(RuntimeError, match="before iterating"):
        s.load_position(s.position_after(1))
