"""Pass 1 of every converter: stream normalised event blocks into user buckets on disk.

Each raw row becomes one *event* (:func:`event_schema`): raw user/item/category ids, time in
seconds (``ts``) with a finer order key (``sub``, e.g. milliseconds), ``kind`` (0: an event that
can be a target; 1: KuaiRand's random log), the history ``action``, the global row number
``seq`` (deterministic tie-break) and int8 label columns ``lab_<task>``. Rows are hash-
partitioned by user into ``n`` Arrow IPC files, so a bucket holds whole users and pass 2 can load
one bucket at a time. Alongside, the item and category vocabularies and an hourly histogram of
target events are accumulated (both small).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from longseq.datasets.convert.hashing import splitmix64

#: bucket files hold at most this many; more would exhaust file handles.
MAX_BUCKETS = 512


def event_schema(label_names: list[str]) -> pa.Schema:
    """Schema of the normalised events with labels ``lab_<name>``."""
    i64 = pa.int64()
    fields = [("user", i64), ("item", i64), ("cat", i64), ("ts", i64), ("sub", i64)]
    fields += [("kind", pa.int8()), ("action", i64), ("seq", i64)]
    fields += [(f"lab_{n}", pa.int8()) for n in label_names]
    return pa.schema(fields)


def num_buckets(input_bytes: int, bucket_mb: float) -> int:
    """Buckets for ``input_bytes`` of raw input at ``bucket_mb`` each (1..MAX_BUCKETS)."""
    return int(min(MAX_BUCKETS, max(1, math.ceil(input_bytes / (bucket_mb * 2**20)))))


def bucket_of(user: np.ndarray, n: int) -> np.ndarray:
    """The bucket of each user id (a hash, so buckets are balanced whatever the ids)."""
    return (splitmix64(user) % np.uint64(n)).astype(np.int64)


class SortedUnique:
    """Distinct int64 values seen so far, merged lazily (amortised O(n log n))."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._merged = np.zeros(0, np.int64)
        self._pending = 0

    def add(self, values: np.ndarray) -> None:
        u = np.unique(values)
        self._parts.append(u)
        self._pending += u.size
        if self._pending > max(self._merged.size, 1 << 20):
            self._merge()

    def _merge(self) -> None:
        if self._parts:
            self._merged = np.unique(np.concatenate([self._merged, *self._parts]))
            self._parts, self._pending = [], 0

    def values(self) -> np.ndarray:
        """Sorted distinct values (the dense id of a value is its position)."""
        self._merge()
        return self._merged


class Histogram:
    """Counts of int64 keys (e.g. hours), merged lazily."""

    def __init__(self) -> None:
        self._keys = np.zeros(0, np.int64)
        self._counts = np.zeros(0, np.int64)

    def add(self, keys: np.ndarray) -> None:
        k, c = np.unique(keys, return_counts=True)
        allk = np.concatenate([self._keys, k])
        allc = np.concatenate([self._counts, c])
        self._keys, inv = np.unique(allk, return_inverse=True)
        self._counts = np.bincount(inv, weights=allc, minlength=self._keys.size).astype(np.int64)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted keys, counts)."""
        return self._keys, self._counts


class Partitioner:
    """Appends event tables to ``folder/bucket-NNNNN.arrow`` (Arrow IPC streams, lz4)."""

    def __init__(self, folder: Path, n: int, schema: pa.Schema) -> None:
        self.folder, self.n, self.schema = folder, n, schema
        folder.mkdir(parents=True, exist_ok=True)
        self._opts = ipc.IpcWriteOptions(compression="lz4")
        self._writers: dict[int, ipc.RecordBatchStreamWriter] = {}
        self._sinks: dict[int, pa.NativeFile] = {}
        self.items, self.cats = SortedUnique(), SortedUnique()
        self.hours = Histogram()
        self.rows = 0

    def path(self, b: int) -> Path:
        return self.folder / f"bucket-{b:05d}.arrow"

    def add(self, table: pa.Table) -> None:
        """Route ``table``'s rows (event schema) to their users' buckets."""
        if table.num_rows == 0:
            return
        table = table.select(self.schema.names).cast(self.schema)
        user = table.column("user").to_numpy()
        self.items.add(table.column("item").to_numpy())
        self.cats.add(table.column("cat").to_numpy())
        kind = table.column("kind").to_numpy()
        self.hours.add(table.column("ts").to_numpy()[kind == 0] // 3600)
        self.rows += table.num_rows
        b = bucket_of(user, self.n)
        order = np.argsort(b, kind="stable")
        bounds = np.searchsorted(b[order], np.arange(self.n + 1))
        table = table.take(pa.array(order))
        for k in np.flatnonzero(np.diff(bounds)):
            part = table.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k]))
            self._writer(int(k)).write_table(part)

    def _writer(self, b: int) -> ipc.RecordBatchStreamWriter:
        if b not in self._writers:
            self._sinks[b] = pa.OSFile(str(self.path(b)), "wb")
            self._writers[b] = ipc.new_stream(self._sinks[b], self.schema, options=self._opts)
        return self._writers[b]

    def close(self) -> list[Path]:
        """Close every bucket; return the bucket files that exist (in bucket order)."""
        for b in sorted(self._writers):
            self._writers[b].close()
            self._sinks[b].close()
        return [self.path(b) for b in range(self.n) if b in self._writers]


def read_bucket(path: Path) -> pa.Table:
    """One bucket file as a table."""
    with pa.OSFile(str(path), "rb") as f:
        return ipc.open_stream(f).read_all()
