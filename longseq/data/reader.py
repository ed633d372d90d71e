"""Streaming, rank-sharded, resumable reader of request-level Parquet.

Work is split into *units* (a Parquet row group, or a contiguous slice of one when a split has
fewer row groups than ranks). Each epoch the units are shuffled with a seed shared by all ranks and
dealt round-robin, so every request is read by exactly one rank exactly once per epoch. Within a
rank, rows pass through a bounded shuffle buffer. ``state_dict()`` records the position so a
resumed run continues with the next unread batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class _Unit:
    path: str
    row_group: int
    start: int  # row offset inside the row group
    stop: int


def list_parquet_files(split_dir: str | Path) -> list[str]:
    """Sorted Parquet files of a split folder; a clear error if there are none."""
    d = Path(split_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"data split folder not found: {d}")
    files = sorted(str(p) for p in d.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no .parquet files under {d}")
    return files


def _units(files: list[str], world: int) -> list[_Unit]:
    groups = []
    for f in files:
        md = pq.ParquetFile(f).metadata
        groups += [(f, g, md.row_group(g).num_rows) for g in range(md.num_row_groups)]
    split = len(groups) < 4 * world
    out = []
    for f, g, n in groups:
        parts = world if split else 1
        bounds = np.linspace(0, n, parts + 1).astype(int)
        out += [_Unit(f, g, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return out


class RequestReader:
    """Iterate a split as Arrow tables of ``batch_size`` requests for one rank.

    Args:
        split_dir: folder of Parquet files (e.g. ``<data>/train``).
        batch_size: requests per yielded table.
        rank / world_size: this reader's share of the units.
        shuffle: shuffle units per epoch and rows through a buffer of ``shuffle_buffer`` rows.
        infinite: loop over epochs forever (training); otherwise one epoch. Either way the last
            batch of an epoch may be smaller: no request is dropped or repeated, and the position
            (epoch, batches consumed) is all a resume needs.
        columns: columns to read (``None``: all).
    """

    def __init__(
        self,
        split_dir: str | Path,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        shuffle_buffer: int = 4096,
        seed: int = 0,
        infinite: bool = False,
        columns: list[str] | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.files = list_parquet_files(split_dir)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.shuffle_buffer = shuffle, max(shuffle_buffer, batch_size)
        self.seed, self.infinite, self.columns = seed, infinite, columns
        self.units = _units(self.files, world_size)
        self.epoch = 0
        self.batches_emitted = 0  # within the current epoch
        self.rows_emitted = 0  # over all epochs

    def num_rows(self) -> int:
        """Rows this rank reads per epoch."""
        return sum(u.stop - u.start for u in self._my_units(0))

    def _my_units(self, epoch: int) -> list[_Unit]:
        order = np.arange(len(self.units))
        if self.shuffle:
            np.random.default_rng([self.seed, epoch]).shuffle(order)
        return [self.units[i] for i in order[self.rank :: self.world_size]]

    def _read(self, u: _Unit) -> pa.Table:
        t = pq.ParquetFile(u.path).read_row_group(u.row_group, columns=self.columns)
        return t.slice(u.start, u.stop - u.start)

    def _epoch_batches(self, epoch: int) -> Iterator[pa.Table]:
        rng = np.random.default_rng([self.seed, epoch, self.rank, 7])
        buf: list[pa.Table] = []
        buffered = 0

        def drain(limit: int) -> Iterator[pa.Table]:
            nonlocal buf, buffered
            if not buf:
                return
            t = pa.concat_tables(buf)
            if self.shuffle:
                t = t.take(rng.permutation(t.num_rows))
            while t.num_rows >= max(limit, 1) and t.num_rows >= self.batch_size:
                yield t.slice(0, self.batch_size)
                t = t.slice(self.batch_size)
            buf, buffered = ([t], t.num_rows) if t.num_rows else ([], 0)

        for u in self._my_units(epoch):
            buf.append(self._read(u))
            buffered += u.stop - u.start
            if buffered >= self.shuffle_buffer:
                yield from drain(self.shuffle_buffer // 2)
        yield from drain(0)
        if buf and buffered:
            yield pa.concat_tables(buf)  # the partial tail of the epoch

    def __iter__(self) -> Iterator[pa.Table]:
        while True:
            skip = self.batches_emitted
            for i, t in enumerate(self._epoch_batches(self.epoch)):
                if i < skip:
                    continue  # resuming: batches already consumed before the checkpoint
                self.batches_emitted = i + 1
                self.rows_emitted += t.num_rows
                yield t
            self.epoch += 1
            self.batches_emitted = 0
            if not self.infinite:
                return

    def state_dict(self) -> dict[str, int]:
        """Position to resume from (epoch and batches consumed in it)."""
        return {
            "epoch": self.epoch,
            "batches_emitted": self.batches_emitted,
            "rows_emitted": self.rows_emitted,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the position recorded by `state_dict`."""
        self.epoch = int(state["epoch"])
        self.batches_emitted = int(state["batches_emitted"])
        self.rows_emitted = int(state["rows_emitted"])


def planned_requests(
    split_dir: str | Path,
    batch_size: int,
    world_size: int,
    steps: int,
    shuffle_buffer: int = 4096,
    seed: int = 0,
) -> int:
    """Requests that ``world_size`` training ranks read in their first ``steps`` batches.

    The trainer's readers are deterministic, so this is exact: use it to size ``max_steps``
    for a number of epochs, or to check a run read every planned request once. Reads only the
    ``request_id`` column.
    """
    total = 0
    for rank in range(world_size):
        reader = RequestReader(
            split_dir,
            batch_size,
            rank,
            world_size,
            shuffle=True,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            infinite=True,
            columns=["request_id"],
        )
        total += sum(t.num_rows for t in itertools.islice(iter(reader), steps))
    return total
