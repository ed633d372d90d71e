"""One source of collated training batches: a reader, its window RNG, and the batching rule.

`StreamSpec` is everything needed to build the batcher of one (rank, worker) anywhere, including
in a data-loader worker process (it is a plain, picklable dataclass). `Batcher.next_batch` cuts
the reader's row stream into a batch (``batch_size`` requests, or a token budget), samples the
history windows and collates; `Batcher.position` is the reader + RNG state after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.data.batch import RequestBatch
from longseq.data.collate import collate
from longseq.data.config import DataConfig
from longseq.data.features import FeatureSpec
from longseq.data.reader import RequestReader
from longseq.data.windows import sample_windows


@dataclass
class StreamSpec:
    """The training stream of one rank: the data config (split, batch size, windows, workers,
    caps, bad-row policy: `longseq.data.config.DataConfig`) plus what is not in it.

    Attributes:
        data: the ``data:`` section, validated by the job's entry point.
        rank / world_size: this rank of the training ranks.
        seed: the job's seed (shuffling, window sampling).
        tasks: the label tasks collated into each batch.
        features: the declared side features collated into each batch (the model's).
    """

    data: DataConfig
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    tasks: list[str] = field(default_factory=lambda: ["click"])
    features: tuple[FeatureSpec, ...] = ()

    @property
    def split_dir(self) -> str:
        """``<data.path>/<data.split>``."""
        return str(Path(self.data.path) / self.data.split)

    @property
    def num_workers(self) -> int:
        """``data.num_workers``: data-loader worker processes of the rank (0: in-process)."""
        return self.data.num_workers

    @property
    def streams(self) -> int:
        """Independent row streams of the rank: its workers, or 1 in-process (the same parts:
        0 and 1 workers read identically)."""
        return max(1, self.data.num_workers)

    def reader(self, worker: int) -> RequestReader:
        """The endless, shuffled reader of logical worker ``worker`` (``data.max_hist_len`` and
        ``data.max_targets`` caps applied)."""
        d = self.data
        return RequestReader(
            Path(self.split_dir),
            d.batch_size,
            self.rank,
            self.world_size,
            shuffle=True,
            shuffle_buffer=d.shuffle_buffer,
            seed=self.seed,
            infinite=True,
            worker=worker,
            num_workers=self.streams,
            on_bad_row=d.on_bad_row,
            bad_rows_log=d.bad_rows_log,
            max_hist_len=d.max_hist_len,
            max_targets=d.max_targets,
        )

    def rng(self, worker: int) -> np.random.Generator:
        """The window-sampling RNG of logical worker ``worker``."""
        return np.random.default_rng([self.seed, self.rank, worker])

    def batcher(self, worker: int) -> Batcher:
        return Batcher(self.reader(worker), self.rng(worker), self)


def token_cut(table: pa.Table, windows: np.ndarray | None, max_tokens: int, pointwise: bool) -> int:
    """Requests of ``table`` (a prefix) whose served history tokens fit in ``max_tokens``
    (pointwise: tokens times targets, each target row repeats the history); at least 1."""
    served = pc.list_value_length(table.column("hist_item_id")).to_numpy(zero_copy_only=False)
    served = served.astype(np.int64)
    if windows is not None:
        served = np.minimum(served, windows)
    if pointwise:
        served = served * pc.list_value_length(table.column("tgt_item_id")).to_numpy(False)
    n = int(np.searchsorted(np.cumsum(served), max_tokens, side="right"))
    return max(1, n)


class Batcher:
    """Reader + window RNG of one logical worker -> `RequestBatch`es (on the CPU)."""

    def __init__(self, reader: RequestReader, rng: np.random.Generator, spec: StreamSpec) -> None:
        self.reader, self.rng, self.spec = reader, rng, spec

    def position(self) -> dict[str, Any]:
        """Reader + RNG state after the last batch (JSON-serialisable)."""
        return {"reader": self.reader.state_dict(), "rng": self.rng.bit_generator.state}

    def load_position(self, position: dict[str, Any]) -> None:
        self.reader.load_state_dict(position["reader"])
        self.rng.bit_generator.state = position["rng"]

    def next_batch(self) -> RequestBatch:
        """The next batch: ``batch_size`` requests, or fewer under ``max_tokens``.

        With a token budget the windows of ``batch_size`` look-ahead rows are drawn (a fixed
        number of draws per batch, so the RNG position stays exact), the batch is cut where the
        budget ends, and only the rows taken are consumed.
        """
        d, size = self.spec.data, self.spec.data.batch_size
        if d.max_tokens <= 0:
            table = self.reader.take(size)
            windows = sample_windows(d.window, self.rng, table.num_rows)
        else:
            ahead = self.reader.peek(size)
            windows = sample_windows(d.window, self.rng, ahead.num_rows)
            n = token_cut(ahead, windows, d.max_tokens, d.pointwise)
            table = self.reader.take(n)
            windows = None if windows is None else windows[:n]
        return collate(
            table, self.spec.tasks, windows, pointwise=d.pointwise, features=self.spec.features
        )
