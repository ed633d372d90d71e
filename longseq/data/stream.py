"""The training input: a position-tracking stream of collated `RequestBatch`es.

`BatchStream` turns the reader's Arrow tables into `RequestBatch`es (window sampling +
collation) and remembers the reader/RNG position after every batch it produces, so a checkpoint
records the position after the last *trained* batch even when a pipeline has already prefetched
the next ones. `build_train_stream` is what the trainer calls: everything about how data is read
and batched lives here, in the data package.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longseq.data.batch import RequestBatch
from longseq.data.collate import collate
from longseq.data.config import DataConfig
from longseq.data.reader import RequestReader
from longseq.data.windows import WindowConfig, sample_windows


class BatchStream:
    """Iterator of `RequestBatch` that records the position after each produced batch."""

    def __init__(
        self,
        reader: RequestReader,
        rng: np.random.Generator,
        window: WindowConfig,
        tasks: list[str],
        pointwise: bool,
        device: torch.device,
    ) -> None:
        self.reader, self.rng, self.window = reader, rng, window
        self.tasks, self.pointwise, self.device = tasks, pointwise, device
        self._it: Iterator | None = None  # created on first use, after any load_position
        self.produced = 0
        self._positions: dict[int, dict[str, Any]] = {0: self._position()}

    def _position(self) -> dict[str, Any]:
        return {"reader": self.reader.state_dict(), "rng": self.rng.bit_generator.state}

    def __iter__(self) -> Iterator[RequestBatch]:
        return self

    def load_position(self, position: dict[str, Any]) -> None:
        """Resume from a position returned by `position_after` (before the first batch)."""
        if self.produced or self._it is not None:
            raise RuntimeError("BatchStream.load_position must be called before iterating")
        self.reader.load_state_dict(position["reader"])
        self.rng.bit_generator.state = position["rng"]
        self._positions = {0: self._position()}

    def __next__(self) -> RequestBatch:
        if self._it is None:
            self._it = iter(self.reader)
        table = next(self._it)
        windows = sample_windows(self.window, self.rng, table.num_rows)
        batch = collate(table, self.tasks, windows, pointwise=self.pointwise)
        self.produced += 1
        self._positions[self.produced] = self._position()
        return batch.to(self.device, non_blocking=True)

    def position_after(self, consumed: int) -> dict[str, Any]:
        """Reader + RNG state after the first ``consumed`` batches (older ones are dropped)."""
        pos = self._positions[consumed]
        for k in [k for k in self._positions if k < consumed]:
            del self._positions[k]
        return pos


def build_train_stream(
    cfg: DataConfig,
    rank: int,
    world_size: int,
    seed: int,
    tasks: list[str],
    device: torch.device,
) -> BatchStream:
    """The trainer's input for one rank: an endless, shuffled, resumable `BatchStream`."""
    reader = RequestReader(
        Path(cfg.path) / cfg.split,
        cfg.batch_size,
        rank,
        world_size,
        shuffle=True,
        shuffle_buffer=cfg.shuffle_buffer,
        seed=seed,
        infinite=True,
    )
    rng = np.random.default_rng([seed, rank])
    return BatchStream(reader, rng, cfg.window, tasks, cfg.pointwise, device)
