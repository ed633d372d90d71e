"""One training step, plain or pipelined, fed by a `longseq.data.stream.BatchStream`.

`PlainStepper` runs forward/backward/step in sequence; `PipelinedStepper` uses
TorchRec's `TrainPipelineSparseDist`, which overlaps the next batch's input all-to-all with the
current batch's compute. Both return the step's counters (`longseq.train.task.STEP_COUNTERS`) and
keep the batch's per-target probabilities and labels in ``last_predictions``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from longseq.data.stream import BatchStream


class PlainStepper:
    """forward -> backward -> optimizer step, one batch at a time."""

    def __init__(self, model: nn.Module, optimizer: Any, stream: BatchStream) -> None:
        self.model, self.optimizer, self.stream = model, optimizer, stream
        self.last_predictions: tuple[torch.Tensor, torch.Tensor] | None = None

    def step(self) -> torch.Tensor:
        """Train on the next batch; returns its `STEP_COUNTERS` tensor (loss first)."""
        loss, (counters, probs, labels) = self.model(next(self.stream))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.last_predictions = (probs, labels)
        return counters.detach().cpu()

    def pipelined_modules(self) -> int:
        """No pipeline, so no module is overlapped."""
        return 0


class PipelinedStepper:
    """`TrainPipelineSparseDist`: the next batch's input distribution overlaps this step."""

    def __init__(
        self, model: nn.Module, optimizer: Any, stream: BatchStream, device: torch.device
    ) -> None:
        self.stream = stream
        self.pipeline = TrainPipelineSparseDist(model, optimizer, device)
        self.last_predictions: tuple[torch.Tensor, torch.Tensor] | None = None

    def step(self) -> torch.Tensor:
        """Train on the next batch; returns its `STEP_COUNTERS` tensor (loss first)."""
        counters, probs, labels = self.pipeline.progress(self.stream)
        self.last_predictions = (probs, labels)
        return counters.detach().cpu()

    def pipelined_modules(self) -> int:
        """How many sharded modules the pipeline overlaps (0 = it silently fell back)."""
        return len(getattr(self.pipeline, "_pipelined_modules", []))
