"""Ranks x data-loader workers: every request read exactly once per epoch, even shares, full
training batches on every rank, exact resumption, and the real torch DataLoader path."""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reader import _rows

from longseq.data.config import DataConfig
from longseq.data.format import REQUEST_SCHEMA
from longseq.data.reader import RequestReader
from longseq.data.stream import build_train_stream

CPU = torch.device("cpu")
SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

layouts = st.lists(  # files, each a list of row-group sizes
    st.lists(st.integers(1, 9), min_size=1, max_size=4), min_size=1, max_size=4
)


def _write(root: Path, layout: list[list[int]]) -> int:
    start = 0
    for i, groups in enumerate(layout):
        with pq.ParquetWriter(root / f"f{i}.parquet", REQUEST_SCHEMA) as w:
            for g in groups:
                w.write_table(_rows(start, g), row_group_size=g)
                start += g
    return start


def _ids(tables) -> list[int]:
    return [i for t in tables for i in t.column("request_id").to_pylist()]


@SETTINGS
@given(
    layout=layouts,
    world=st.integers(1, 4),
    workers=st.integers(1, 3),
    batch=st.integers(1, 6),
    buffer=st.integers(1, 12),
    shuffle=st.booleans(),
    seed=st.integers(0, 3),
)
def test_every_request_once_per_epoch_over_ranks_and_workers(
    layout, world, workers, batch, buffer, shuffle, seed
):
    with tempfile.TemporaryDirectory() as tmp:
        total = _write(Path(tmp), layout)
        for epoch in range(2):
            seen: Counter[int] = Counter()
            shares = []
            for rank in range(world):
                rank_ids = []
                for w in range(workers):
                    r = RequestReader(tmp, batch, rank, world, shuffle, buffer, seed,
                                      worker=w, num_workers=workers)  # fmt: skip
                    r.epoch = epoch
                    tables = list(r)
                    assert all(t.num_rows == batch for t in tables[:-1])
                    assert sum(t.num_rows for t in tables) == r.num_rows()
                    rank_ids += _ids(tables)
                seen.update(rank_ids)
                shares.append(len(rank_ids))
                # a rank's share does not depend on its number of workers
                alone = RequestReader(tmp, batch, rank, world, shuffle, buffer, seed)
                alone.epoch = epoch
                assert sorted(_ids(alone)) == sorted(rank_ids)
            assert sorted(seen) == list(range(total)) and set(seen.values()) == {1}
            assert max(shares) - min(shares) <= 1 and sum(shares) == total
            assert shares == [(r + 1) * total // world - r * total // world for r in range(world)]


@SETTINGS
@given(
    layout=layouts,
    world=st.integers(1, 3),
    workers=st.integers(1, 3),
    batch=st.integers(1, 5),
    buffer=st.integers(1, 10),
    steps=st.integers(1, 30),
)
def test_training_readers_have_full_batches_and_exact_epochs(
    layout, world, workers, batch, buffer, steps
):
    """Infinite readers: every batch full on every rank and worker; each reader's first share
    rows are exactly its epoch-0 part, the next share rows its epoch-1 part."""
    with tempfile.TemporaryDirectory() as tmp:
        total = _write(Path(tmp), layout)
        if total < world * workers:
            with pytest.raises(ValueError, match="cannot feed"):
                RequestReader(tmp, batch, 0, world, worker=0,
                              num_workers=workers, infinite=True)  # fmt: skip
            return
        for rank, w in itertools.product(range(world), range(workers)):

            def make(infinite: bool, rank: int = rank, w: int = w) -> RequestReader:
                return RequestReader(tmp, batch, rank, world, True, buffer, 1, infinite,
                                     worker=w, num_workers=workers)  # fmt: skip

            tables = list(itertools.islice(iter(make(True)), steps))
            assert [t.num_rows for t in tables] == [batch] * steps
            flat = _ids(tables)
            finite = make(False)
            share = finite.num_rows()
            epochs = min(-(-len(flat) // share), 4)
            expect = [i for _ in range(epochs) for i in _ids(finite)]  # each list() = 1 epoch
            n = min(len(flat), len(expect))
            assert flat[:n] == expect[:n]
            assert sorted(expect[:share]) == sorted(set(expect[:share]))


@SETTINGS
@given(
    world=st.integers(1, 3),
    workers=st.integers(0, 1),
    consumed=st.integers(0, 9),
    more=st.integers(1, 6),
    max_tokens=st.sampled_from([0, 0, 300]),
)
def test_stream_resumes_exactly_in_process(tiny_data, world, workers, consumed, more, max_tokens):
    """In-process streams built for any worker count resume at any batch (the worker-process
    path is tested below, with real DataLoader workers, on fewer cases: they cost seconds)."""
    cfg = DataConfig(path=str(tiny_data), batch_size=5, shuffle_buffer=16,
                     num_workers=workers, max_tokens=max_tokens)  # fmt: skip
    cfg.window.mode = "beta"
    cfg.window.l_min, cfg.window.l_avg, cfg.window.l_max = 8, 40, 128
    rank = world - 1
    s = build_train_stream(cfg, rank, world, 3, ["click"], CPU)
    full = [s.__next__() for _ in range(consumed + more)]
    pos = s.position_after(consumed)
    r = build_train_stream(cfg, rank, world, 3, ["click"], CPU)
    r.load_position(pos)
    tail = [next(r) for _ in range(more)]
    for a, b in zip(full[consumed:], tail):
        assert a.request_ids.tolist() == b.request_ids.tolist()
        assert a.history_lengths().tolist() == b.history_lengths().tolist()
    if max_tokens == 0:
        assert pos["reader"]["rows_emitted"] == 5 * consumed


def _collect(stream, n):
    return [
        (b.request_ids.tolist(), b.history_lengths().tolist()) for b in itertools.islice(stream, n)
    ]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("world, workers", [(1, 2), (2, 3)])
def test_worker_processes_read_each_request_once_per_epoch(tiny_data, tiny_meta, world, workers):
    """Real DataLoader worker processes over every rank: one epoch of batches covers the split
    exactly once (batches are full, so an epoch ends inside a batch: count the first share)."""
    total = tiny_meta["num_requests"]["train"]
    cfg = DataConfig(path=str(tiny_data), batch_size=4, shuffle_buffer=16, num_workers=workers)
    seen: list[int] = []
    for rank in range(world):
        parts = [
            RequestReader(tiny_data / "train", 4, rank, world, worker=w, num_workers=workers)
            .num_rows() for w in range(workers)
        ]  # fmt: skip
        s = build_train_stream(cfg, rank, world, 0, ["click"], CPU)
        per_worker: list[list[int]] = [[] for _ in range(workers)]
        step = 0
        while any(len(ids) < n for ids, n in zip(per_worker, parts)):
            b = next(s)
            assert b.batch_size == 4
            per_worker[step % workers] += b.request_ids.tolist()
            step += 1
        s.close()
        for ids, n in zip(per_worker, parts):
            seen += ids[:n]  # the worker's epoch 0
    assert sorted(seen) == list(range(total))


def test_worker_processes_resume_exactly_and_match_in_process(tiny_data):
    cfg = DataConfig(path=str(tiny_data), batch_size=4, shuffle_buffer=16, num_workers=2)
    cfg.window.mode = "beta"
    cfg.window.l_min, cfg.window.l_avg, cfg.window.l_max = 8, 40, 128
    s = build_train_stream(cfg, 1, 2, 5, ["click"], CPU)
    full = _collect(s, 9)
    pos = s.position_after(5)  # odd: worker 1 is due next
    assert pos["next_worker"] == 1 and pos["reader"]["rows_emitted"] == 20
    s.close()
    r = build_train_stream(cfg, 1, 2, 5, ["click"], CPU)
    r.load_position(pos)
    assert _collect(r, 4) == full[5:]
    r.close()
    # in-process with one stream == one worker process
    one = DataConfig(path=str(tiny_data), batch_size=4, shuffle_buffer=16, num_workers=1)
    zero = DataConfig(path=str(tiny_data), batch_size=4, shuffle_buffer=16, num_workers=0)
    a = build_train_stream(one, 0, 2, 5, ["click"], CPU)
    b = build_train_stream(zero, 0, 2, 5, ["click"], CPU)
    assert _collect(a, 6) == _collect(b, 6)
    a.close()
    with pytest.raises(ValueError, match="num_workers"):
        build_train_stream(zero, 1, 2, 5, ["click"], CPU).load_position(pos)
