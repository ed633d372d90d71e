"""The rank-sharded, resumable Parquet reader: exactly-once per epoch over ranks, shuffling, exact
resumption, errors."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.data.format import REQUEST_SCHEMA
from longseq.data.reader import RequestReader, list_parquet_files

#: Row groups per file: uneven sizes, a one-row group, files of one and of several groups.
LAYOUT = {"a": [7, 13], "b/c": [25], "b/d": [10, 10, 3], "e": [1, 2]}
N_ROWS = sum(sum(g) for g in LAYOUT.values())


def _rows(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.Table.from_pylist(
        [
            dict(
                request_id=i,
                user_id=i % 7,
                request_ts=10_000 + i,
                hist_item_id=[i, i + 1],
                hist_category_id=[1, 2],
                hist_action=[0, 1],
                hist_ts=[1, 2],
                tgt_item_id=[i],
                tgt_category_id=[3],
                tgt_click=[i % 2],
                tgt_p_true=[0.5],
            )
            for i in ids
        ],
        schema=REQUEST_SCHEMA,
    )


def _write(root: Path, layout: dict[str, list[int]]) -> Path:
    start = 0
    for name, groups in layout.items():
        path = root / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, REQUEST_SCHEMA) as w:
            for g in groups:
                w.write_table(_rows(start, g), row_group_size=g)
                start += g
    return root


@pytest.fixture(scope="module")
def few_groups(tmp_path_factory) -> Path:
    """8 row groups: fewer than 4 per rank for 2 and 3 ranks (groups are split into slices)."""
    return _write(tmp_path_factory.mktemp("few"), LAYOUT)


@pytest.fixture(scope="module")
def many_groups(tmp_path_factory) -> Path:
    """24 row groups of 3 or 4 rows in 3 files: whole row groups are dealt to the ranks."""
    return _write(tmp_path_factory.mktemp("many"), {f"p{i}": [3, 4] * 4 for i in range(3)})


def _ids(batches: list[pa.Table]) -> list[list[int]]:
    return [b.column("request_id").to_pylist() for b in batches]


def _flat(batches: list[pa.Table]) -> list[int]:
    return [i for b in _ids(batches) for i in b]


def test_layout_is_what_the_tests_assume(few_groups, many_groups):
    files = list_parquet_files(few_groups)
    assert len(files) == 4  # found recursively, sorted
    assert files == sorted(files)
    assert sum(pq.ParquetFile(f).metadata.num_row_groups for f in files) == 8
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == N_ROWS


@pytest.mark.parametrize("data", ["few_groups", "many_groups"])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_request_once_per_epoch_across_ranks(request, data, world, shuffle):
    root = request.getfixturevalue(data)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in list_parquet_files(root))
    seen: Counter[int] = Counter()
    for epoch in range(2):
        per_rank = []
        for rank in range(world):
            reader = RequestReader(root, 5, rank, world, shuffle=shuffle, shuffle_buffer=8)
            reader.epoch = epoch
            batches = list(reader)
            sizes = [b.num_rows for b in batches]
            assert all(s == 5 for s in sizes[:-1]) and 0 < sizes[-1] <= 5
            if epoch == 0:  # num_rows() counts epoch 0's share
                assert sum(sizes) == reader.num_rows()
            per_rank.append(_flat(batches))
        ids = [i for r in per_rank for i in r]
        assert sorted(ids) == list(range(total)), (epoch, world)
        seen.update(ids)
    assert set(seen.values()) == {2}


def test_shuffle_changes_order_between_epochs_but_not_the_set(few_groups):
    reader = RequestReader(few_groups, 4, 0, 1, shuffle=True, shuffle_buffer=16, seed=3)
    e0 = _flat(list(reader))
    assert reader.epoch == 1
    e1 = _flat(list(reader))
    assert sorted(e0) == sorted(e1) == list(range(N_ROWS))
    assert e0 != e1
    assert e0 != sorted(e0)
    # same seed, same epoch -> same order (all ranks agree on the unit permutation)
    again = RequestReader(few_groups, 4, 0, 1, shuffle=True, shuffle_buffer=16, seed=3)
    assert _flat(list(again)) == e0
    other = RequestReader(few_groups, 4, 0, 1, shuffle=True, shuffle_buffer=16, seed=4)
    assert _flat(list(other)) != e0
    plain = RequestReader(few_groups, 4, 0, 1, shuffle=False)
    assert _flat(list(plain)) == list(range(N_ROWS))  # files, groups, rows in order


@pytest.mark.parametrize("world, rank", [(1, 0), (2, 1), (3, 2)])
@pytest.mark.parametrize("k", [0, 1, 3, "all"])
def test_resume_finite_reader(few_groups, world, rank, k):
    def make() -> RequestReader:
        return RequestReader(few_groups, 4, rank, world, shuffle=True, shuffle_buffer=8, seed=11)

    full = _ids(list(make()))
    k = len(full) if k == "all" else k
    assert len(full) > 3
    first = make()
    it = iter(first)
    head = _ids(list(itertools.islice(it, k)))
    state = first.state_dict()
    assert state["rows_emitted"] == sum(map(len, head))
    resumed = make()
    resumed.load_state_dict(dict(state))
    tail = _ids(list(resumed))
    assert head + tail == full
    assert resumed.state_dict()["rows_emitted"] == sum(map(len, full))


@pytest.mark.parametrize("world, rank", [(1, 0), (2, 0), (3, 1)])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_resume_infinite_reader_within_the_first_epoch(many_groups, world, rank, k):
    def make() -> RequestReader:
        return RequestReader(
            many_groups, 3, rank, world, shuffle=True, shuffle_buffer=6, seed=5, infinite=True
        )

    per_epoch = make().num_rows() // 3  # full batches of epoch 0
    assert per_epoch > k + 1
    full = _ids(list(itertools.islice(iter(make()), per_epoch)))
    first = make()
    head = _ids(list(itertools.islice(iter(first), k)))
    state = first.state_dict()
    assert state["epoch"] == 0
    resumed = make()
    resumed.load_state_dict(state)
    tail = _ids(list(itertools.islice(iter(resumed), per_epoch - k)))
    assert head + tail == full
    assert all(len(b) == 3 for b in full)


def test_infinite_reader_has_full_batches_and_carries_epoch_tails(few_groups):
    """Training batches never shrink: the end of epoch e and the start of e + 1 share a batch."""
    reader = RequestReader(few_groups, 5, 0, 1, shuffle=True, shuffle_buffer=8, infinite=True)
    n = 3 * N_ROWS // 5
    batches = _ids(list(itertools.islice(iter(reader), n)))
    assert [len(b) for b in batches] == [5] * n
    flat = [i for b in batches for i in b]
    assert sorted(flat[:N_ROWS]) == list(range(N_ROWS))  # epoch 0 exactly once, then epoch 1
    assert sorted(flat[N_ROWS : 2 * N_ROWS]) == list(range(N_ROWS))
    assert flat[:N_ROWS] != flat[N_ROWS : 2 * N_ROWS]  # reshuffled
    assert reader.epoch == 2 and reader.rows_emitted == 5 * n


def test_resume_infinite_reader_after_an_epoch_boundary(few_groups):
    def make() -> RequestReader:
        return RequestReader(few_groups, 5, 0, 1, shuffle=True, shuffle_buffer=8, infinite=True)

    n = 2 * N_ROWS // 5
    full = _ids(list(itertools.islice(iter(make()), n)))
    k = N_ROWS // 5 + 2  # two batches into epoch 1 (N_ROWS is not a multiple of 5)
    first = make()
    head = _ids(list(itertools.islice(iter(first), k)))
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    tail = _ids(list(itertools.islice(iter(resumed), n - k)))
    assert head + tail == full


def test_columns_and_batch_size_arguments(few_groups):
    reader = RequestReader(few_groups, 64, columns=["request_id", "tgt_item_id"], shuffle=False)
    batches = list(reader)
    assert [b.num_rows for b in batches] == [64, N_ROWS - 64]
    assert batches[0].column_names == ["request_id", "tgt_item_id"]
    with pytest.raises(ValueError, match="batch_size"):
        RequestReader(few_groups, 0)


def test_errors_for_missing_folder_and_no_parquet_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        RequestReader(tmp_path / "nope", 4)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not parquet")
    with pytest.raises(FileNotFoundError, match=r"no \.parquet files"):
        RequestReader(empty, 4)


def test_reads_the_synthetic_splits(tiny_data, tiny_meta):
    """The synth writer's layout: every request of each split once, over 2 ranks."""
    for split in ("train", "test"):
        ids = []
        for rank in range(2):
            ids += _flat(list(RequestReader(tiny_data / split, 16, rank, 2, shuffle_buffer=32)))
        assert len(ids) == len(set(ids)) == tiny_meta["num_requests"][split]
