"""`TrainTask`: the module DMP wraps for training: model + loss + per-step counters
(`STEP_COUNTERS`, packed in one tensor so that a step costs one device-to-host copy).

TorchRec's train pipelines call ``model(batch)`` and expect ``(loss, output)``; keeping the loss
inside the wrapped module lets `TrainPipelineSparseDist` run forward, backward and the optimizer
step itself while it overlaps the next batch's input all-to-all. The model stays a plain module.

``trainer.precision=bf16`` runs the model's forward under ``torch.autocast(bfloat16)``; the logits
are cast back to float32 and the loss is computed outside autocast, in float32. Weights, gradients
and optimizer states stay float32.
"""

from __future__ import annotations

import torch
from torch import nn

from longseq.data.batch import RequestBatch
from longseq.model.model import LongSeqModel

PRECISIONS = ("fp32", "bf16")
#: The names of the per-step counters `TrainTask` returns, in their order in its tensor.
STEP_COUNTERS = ("loss", "targets", "requests", "hist_ids", "input_ids", "aux_loss")


def validate_precision(precision: str, device_type: str, key: str = "trainer.precision") -> None:
    """Raise ``ValueError`` naming ``key`` for an unknown precision or one this device lacks."""
    if precision not in PRECISIONS:
        raise ValueError(f"{key}={precision!r}: choose one of {PRECISIONS}")
    if precision == "bf16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"{key}=bf16: this GPU does not support bfloat16; use fp32")


class TrainTask(nn.Module):
    """``forward(batch) -> (loss, (counters, probs, labels))``: ``loss`` is the labels' loss plus
    the model's auxiliary loss (`LongSeqModel.aux_loss`, if any); ``counters`` is a float64 tensor
    of the batch's `STEP_COUNTERS` (labels' loss, targets, requests, history ids, input ids,
    auxiliary loss; read it by name with `step_counters`), for throughput and all-to-all accounting; ``probs`` (sigmoid of
    the logits, detached, float32) and ``labels`` are ``[targets, tasks]``, for the training
    AUC/NE (`longseq.train.train_metrics`).

    Args:
        model: the model.
        precision: ``fp32``, or ``bf16`` (autocast around the model's forward; on CPU this is
            torch's CPU autocast: it works, but is meant for testing the path, not for speed).
        device_type: ``cuda`` or ``cpu``: the autocast device (fixed here, not read from the
            batch, so that TorchRec's fx tracing of this forward sees no device lookups).
    """

    def __init__(
        self, model: LongSeqModel, precision: str = "fp32", device_type: str = "cpu"
    ) -> None:
        super().__init__()
        validate_precision(precision, device_type)
        self.model = model
        self.precision, self.device_type = precision, device_type

    def forward(
        self, batch: RequestBatch
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        with torch.autocast(
            self.device_type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        ):
            logits = self.model(batch)
        bce = self.model.loss(logits.float(), batch)  # float32, outside autocast
        aux = self.model.aux_loss()
        aux = bce.new_zeros(()) if aux is None else aux.float()
        counters = torch.stack(  # STEP_COUNTERS, in their order
            [
                bce.detach(),
                batch.num_targets.sum(),
                torch.tensor(batch.num_targets.numel(), device=bce.device),
                batch.sparse["hist_item_id"].lengths().sum(),
                torch.tensor(batch.sparse.values().numel(), device=bce.device),
                aux.detach(),
            ]
        ).to(torch.float64)
        return bce + aux, (counters, torch.sigmoid(logits.detach().float()), batch.labels)


def step_counters(counters: torch.Tensor) -> dict[str, float]:
    """``{name: value}`` of the tensor of `STEP_COUNTERS` that `TrainTask` returns."""
    values = counters.detach().cpu().tolist()
    if len(values) != len(STEP_COUNTERS):
        raise ValueError(f"expected the step counters {STEP_COUNTERS}, got {values}")
    return dict(zip(STEP_COUNTERS, values))
