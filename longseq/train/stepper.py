"""One training step, plain or pipelined, fed by a position-tracking batch stream.

`BatchStream` turns the reader's Arrow tables into `RequestBatch`es (window sampling +
collation) and remembers the reader/RNG position after every batch it produces, so a checkpoint
records the position after the last *trained* batch even when a pipeline has already prefetched
the next ones. `PlainStepper` runs forward/backward/step in sequence; `PipelinedStepper` uses
TorchRec's `TrainPipelineSparseDist`, which overlaps the next batch's input all-to-all with the
current batch's compute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from longseq.data.batch import RequestBatch
from longseq.data.collate import collate
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
        self._it = iter(reader)
        self.produced = 0
        self._positions: dict[int, dict[str, Any]] = {0: self._position()}

    def _position(self) -> dict[str, Any]:
        return {"reader": self.reader.state_dict(), "rng": self.rng.bit_generator.state}

    def __iter__(self) -> Iterator[RequestBatch]:
        return self

    def __next__(self) -> RequestBatch:
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


class PlainStepper:
    """forward -> backward -> optimizer step, one batch at a time."""

    def __init__(self, model: nn.Module, optimizer: Any, stream: BatchStream) -> None:
        self.model, self.optimizer, self.stream = model, optimizer, stream

    def step(self) -> torch.Tensor:
        """Train on the next batch; returns ``[loss, targets, requests, hist ids, input ids]``."""
        loss, counters = self.model(next(self.stream))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return counters.detach().cpu()


class PipelinedStepper:
    """`TrainPipelineSparseDist`: the next batch's input distribution overlaps this step."""

    def __init__(
        self, model: nn.Module, optimizer: Any, stream: BatchStream, device: torch.device
    ) -> None:
        self.stream = stream
        self.pipeline = TrainPipelineSparseDist(model, optimizer, device)

    def step(self) -> torch.Tensor:
        counters = self.pipeline.progress(self.stream)
        return counters.detach().cpu()

    def pipelined_modules(self) -> int:
        """How many sharded modules the pipeline overlaps (0 = it silently fell back)."""
        return len(getattr(self.pipeline, "_pipelined_modules", []))
