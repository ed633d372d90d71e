"""Streaming, rank- and worker-sharded, resumable reader of request-level Parquet.

Each epoch the split's rows are cut into one contiguous part per (rank, data-loader worker)
(`longseq.data.shards`): every request is read by exactly one reader exactly once per epoch, and
rank shares differ by at most one request. A reader loads its part one *window* (at least
``shuffle_buffer`` rows) at a time, validates it (`longseq.data.bad_rows`), shuffles it and emits
its rows; ``take(n)`` / ``peek(n)`` cut the resulting row stream into batches.

* ``infinite=False`` (evaluation, one pass): batches of ``batch_size`` rows, the last one of the
  epoch shorter.
* ``infinite=True`` (training): the row stream runs on through the epochs, so **every batch has
  exactly ``batch_size`` rows** on every rank (a batch may hold the end of epoch ``e`` and the start
  of ``e + 1``): every rank takes part in every step, with equal batch shapes, for ever.

The position (``state_dict()``: epoch, window, offset in the window, counters) identifies the next
row; resuming loads only the window it is in (no replay of the epoch).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from longseq.data.bad_rows import BadRow, BadRowLog, RowChecker
from longseq.data.collate import cut_histories, cut_targets
from longseq.data.manifest import ManifestMismatch, split_layout
from longseq.data.meta import DatasetMeta
from longseq.data.shards import Piece, ShardPlan, list_parquet_files
from longseq.log import get_logger

log = get_logger("longseq.data")

__all__ = ["RequestReader", "list_parquet_files", "planned_requests"]

STATE_VERSION = 2


class RequestReader:
    """Iterate one (rank, worker) share of a split as Arrow tables of ``batch_size`` requests.

    Args:
        split_dir: folder of Parquet files (e.g. ``<data>/train``).
        batch_size: requests per yielded table.
        rank / world_size: this reader's rank and the number of ranks.
        shuffle: shuffle the row-group order per epoch and rows within each window of
            ``shuffle_buffer`` rows.
        infinite: run through epochs for ever with full batches; otherwise one epoch.
        columns: columns to yield (``None``: all).
        worker / num_workers: this reader's data-loader worker among the rank's workers (each
            reads its own part of the rank's share).
        on_bad_row: ``error`` (raise, naming file, row group, row, request_id and column) or
            ``skip`` (drop, count in ``bad_rows`` and report to ``bad_rows_log`` / stderr).
            Rows are validated unless ``columns`` leaves out core columns under ``error``.
        bad_rows_log: JSON-lines file for skipped requests (empty: stderr only).
        max_hist_len: histories longer than this are cut to their most recent events when read
            (counted in ``hist_cut``, reported once on stderr); 0 = ``meta.json``'s
            ``hist_len_max`` (no cap without one), -1 = no cap.
        max_targets: requests with more targets keep their first ``max_targets`` (every
            ``tgt_*`` list column; counted in ``tgt_cut``, reported once on stderr); 0 =
            ``meta.json``'s ``targets_per_request`` (no cap without one), -1 = no cap.

    A split read through its manifest is planned from the manifest's row counts; each footer
    the reader opens is checked against them (`SplitLayout.check_footer`): a manifest that
    lies raises `ManifestMismatch` naming the file and row group.
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
        *,
        worker: int = 0,
        num_workers: int = 1,
        on_bad_row: str = "error",
        bad_rows_log: str = "",
        max_hist_len: int = 0,
        max_targets: int = 0,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if not 0 <= rank < world_size or not 0 <= worker < max(num_workers, 1):
            raise ValueError(f"rank {rank}/{world_size}, worker {worker}/{num_workers}: bad ids")
        layout = split_layout(split_dir)  # its manifest, or every footer (names a bad file)
        self.layout = layout
        self.split_dir, self.files = str(split_dir), layout.files
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.worker, self.num_workers = worker, max(num_workers, 1)
        self.shuffle, self.seed, self.infinite, self.columns = shuffle, seed, infinite, columns
        self.checker = RowChecker(split_dir, on_bad_row)
        self.log = BadRowLog(bad_rows_log)
        self.max_hist_len = history_cap(split_dir, max_hist_len)
        self.hist_cut = 0  # requests whose history was cut to max_hist_len (windows loaded)
        self.max_targets = target_cap(split_dir, max_targets)
        self.tgt_cut = 0  # requests whose targets were cut to max_targets (windows loaded)
        core = {"request_id", "user_id", "request_ts", "hist_item_id", "tgt_item_id"}
        self._validate = on_bad_row == "skip" or columns is None or core <= set(columns)
        if self._validate:
            layout.check_schemas(self.checker.tasks, self.checker.features)
        part = rank * self.num_workers + worker
        parts = world_size * self.num_workers
        window_rows = max(shuffle_buffer, batch_size) if shuffle else 1
        self.plan = ShardPlan(layout.groups, part, parts, shuffle, seed, window_rows)
        if infinite and self.plan.share == 0:
            raise ValueError(
                f"{split_dir}: {self.plan.total_rows} requests cannot feed {world_size} ranks x "
                f"{self.num_workers} workers (rank {rank} worker {worker} gets none): use fewer "
                "ranks or data.num_workers"
            )
        self._files: dict[str, pq.ParquetFile] = {}
        self._windows: dict[tuple[int, int], tuple[pa.Table, list[BadRow]]] = {}
        self.epoch = 0
        self.window = 0  # window of `epoch` holding the next row
        self.offset = 0  # rows of that window already emitted
        self.rows_emitted = 0  # over all epochs
        self.batches_emitted = 0  # tables yielded by iteration / take, over all epochs
        self.bad_rows = 0  # requests skipped so far (windows the position has entered)

    # ----------------------------------------------------------------- share and position
    def num_rows(self) -> int:
        """Rows of this reader's share per epoch (before any skipped bad rows)."""
        return self.plan.share

    def state_dict(self) -> dict[str, Any]:
        """Position of the next row (plain ints: JSON-serialisable)."""
        return {
            "version": STATE_VERSION,
            "part": [self.plan.part, self.plan.parts],
            "epoch": self.epoch,
            "window": self.window,
            "offset": self.offset,
            "rows_emitted": self.rows_emitted,
            "batches_emitted": self.batches_emitted,
            "bad_rows": self.bad_rows,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at the position recorded by `state_dict` (before iterating)."""
        self.rows_emitted = int(state["rows_emitted"])
        self.batches_emitted = int(state.get("batches_emitted", 0))
        self.bad_rows = int(state.get("bad_rows", 0))
        self.epoch = int(state["epoch"])
        if "window" not in state:  # a position written before per-window plans
            warnings.warn(
                "reader position from an older longseq (no 'window'): resuming at the start "
                f"of epoch {self.epoch}",
                stacklevel=2,
            )
            self.window = self.offset = 0
            return
        part = list(state.get("part", [self.plan.part, self.plan.parts]))
        if part != [self.plan.part, self.plan.parts]:
            raise ValueError(
                f"reader position was recorded for part {part[0]} of {part[1]} (ranks x "
                f"workers); this reader is part {self.plan.part} of {self.plan.parts}: resume "
                "with the same world size and data.num_workers"
            )
        self.window, self.offset = int(state["window"]), int(state["offset"])
        self._windows.clear()

    # ----------------------------------------------------------------- loading windows
    def _parquet(self, path: str) -> pq.ParquetFile:
        if path not in self._files:
            pf = pq.ParquetFile(path)
            self.layout.check_footer(path, pf.metadata, self.split_dir)
            self._files[path] = pf
        return self._files[path]

    def _read_piece(self, p: Piece, epoch: int) -> tuple[pa.Table | None, list[BadRow]]:
        cols = None if self._validate else self.columns
        try:
            t = self._parquet(p.path).read_row_group(p.row_group, columns=cols)
        except ManifestMismatch:
            raise  # the plan itself is wrong: no policy can skip that
        except Exception as e:  # noqa: BLE001 - corrupt page, I/O error: named, then policy
            return None, [self.checker.unreadable(p.path, p.row_group, p.rows, e)]
        t = t.slice(p.start, p.rows)
        bad: list[BadRow] = []
        if self._validate:
            t, bad = self.checker.filter(t, p.path, p.row_group, p.start)
            if self.columns is not None:
                t = t.select(self.columns)
        for r in bad:
            r.epoch, r.rank, r.worker = epoch, self.rank, self.worker
        if self.max_hist_len > 0 and "hist_item_id" in t.column_names:
            t, n = cut_histories(t, self.max_hist_len)
            if n and not self.hist_cut:
                log.warning(
                    f"{p.path} (row group {p.row_group}): {n} request(s) with "
                    f"more than data.max_hist_len={self.max_hist_len} history events cut to "
                    "their most recent ones (reported once per reader; counted in hist_cut)"
                )
            self.hist_cut += n
        if self.max_targets > 0 and "tgt_item_id" in t.column_names:
            t, n = cut_targets(t, self.max_targets)
            if n and not self.tgt_cut:
                log.warning(
                    f"{p.path} (row group {p.row_group}): {n} request(s) with more than "
                    f"data.max_targets={self.max_targets} targets cut to their first ones "
                    "(reported once per reader; counted in tgt_cut)"
                )
            self.tgt_cut += n
        return t, bad

    def _load(self, epoch: int, window: int) -> tuple[pa.Table, list[BadRow]]:
        key = (epoch, window)
        if key not in self._windows:
            tables, bad = [], []
            for p in self.plan.windows(epoch)[window]:
                t, b = self._read_piece(p, epoch)
                bad += b
                if t is not None:
                    tables.append(t)
            t = self._concat(tables)  # no table: every piece unreadable
            t = t.take(self.plan.window_permutation(epoch, window, t.num_rows))
            self._windows[key] = (t, bad)
        return self._windows[key]

    # ----------------------------------------------------------------- the row stream
    def _walk(self, n: int, commit: bool) -> list[pa.Table]:
        """The next ``n`` rows (fewer at the end of a finite epoch); move there if ``commit``."""
        e, w, off = self.epoch, self.window, self.offset
        out: list[pa.Table] = []
        need, got_at_last_epoch = n, None
        while need > 0:
            if w >= len(self.plan.windows(e)):
                if not self.infinite:
                    break
                got = n - need
                if got_at_last_epoch == got:  # a whole epoch without one valid request
                    raise ValueError(
                        f"{self.split_dir}: rank {self.rank} worker {self.worker} found no valid "
                        "request in a whole epoch of its share (all skipped as bad rows)"
                    )
                got_at_last_epoch = got
                e, w, off = e + 1, 0, 0
                continue
            table, bad = self._load(e, w)
            if off == 0 and commit:  # entering this window: count and report its bad rows
                self.bad_rows += sum(r.rows for r in bad)
                self.log.report(bad)
            k = min(need, table.num_rows - off)
            if k > 0:
                out.append(table.slice(off, k))
                off += k
                need -= k
            if need > 0:
                w, off = w + 1, 0
        if commit:
            self.epoch, self.window, self.offset = e, w, off
            self.rows_emitted += n - need
            for key in [k for k in self._windows if k < (e, w)]:
                del self._windows[key]
        return out

    def _concat(self, parts: list[pa.Table]) -> pa.Table:
        if len(parts) == 1:
            return parts[0]
        if parts:
            return pa.concat_tables(parts)
        t = self._parquet(self.files[0]).schema_arrow.empty_table()
        return t.select(self.columns) if self.columns is not None else t

    def peek(self, n: int) -> pa.Table:
        """The next ``n`` rows without consuming them (fewer at the end of a finite epoch)."""
        return self._concat(self._walk(n, commit=False))

    def take(self, n: int) -> pa.Table:
        """Consume and return the next ``n`` rows (fewer, or none, at a finite epoch's end)."""
        t = self._concat(self._walk(n, commit=True))
        if t.num_rows:
            self.batches_emitted += 1
        return t

    def __iter__(self) -> Iterator[pa.Table]:
        while True:
            t = self.take(self.batch_size)
            if t.num_rows == 0:  # only at the end of a finite epoch
                self.epoch, self.window, self.offset = self.epoch + 1, 0, 0
                self._windows.clear()
                return
            yield t


def _meta_cap(split_dir: str | Path, value: int, key: str) -> int:
    """``value`` if set (-1: none, as 0), else ``meta.json``'s ``key`` (0: none)."""
    if value:
        return max(value, 0)
    meta = DatasetMeta.near(split_dir)
    return int(getattr(meta, key)) if meta is not None else 0


def history_cap(split_dir: str | Path, max_hist_len: int) -> int:
    """The history cap in events (0: none) for ``data.max_hist_len``."""
    return _meta_cap(split_dir, max_hist_len, "hist_len_max")


def target_cap(split_dir: str | Path, max_targets: int) -> int:
    """The per-request target cap (0: none) for ``data.max_targets``."""
    return _meta_cap(split_dir, max_targets, "targets_per_request")


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
    for a number of epochs, or to check a run read every planned request once. Training batches
    are always full, so this is ``world_size * steps * batch_size``; the readers are run anyway
    (``request_id`` only) so that the number is measured, not assumed.
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
