"""`TrainTask`: the module DMP wraps for training: model + loss + per-step counters.

TorchRec's train pipelines call ``model(batch)`` and expect ``(loss, output)``; keeping the loss
inside the wrapped module lets `TrainPipelineSparseDist` run forward, backward and the optimizer
step itself while it overlaps the next batch's input all-to-all. The model stays a plain module.
"""

from __future__ import annotations

import torch
from torch import nn

from longseq.data.batch import RequestBatch
from longseq.model.model import LongSeqModel


class TrainTask(nn.Module):
    """``forward(batch) -> (loss, counters)``; counters = ``[targets, requests, history ids,
    input ids]`` of the batch (float64), for throughput and all-to-all accounting."""

    def __init__(self, model: LongSeqModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: RequestBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch)
        loss = self.model.loss(logits, batch)
        counters = torch.stack(
            [
                batch.num_targets.sum(),
                torch.tensor(batch.num_targets.numel(), device=loss.device),
                batch.sparse["hist_item_id"].lengths().sum(),
                torch.tensor(batch.sparse.values().numel(), device=loss.device),
            ]
        ).to(torch.float64)
        return loss, torch.cat([loss.detach().to(torch.float64).reshape(1), counters])


_PREFIX = "model."


def model_state_dict(wrapped: nn.Module) -> dict[str, torch.Tensor]:
    """The wrapped `LongSeqModel`'s state dict with its own key names (what checkpoints store,
    so ``longseq.eval`` loads them into a bare model)."""
    return {k[len(_PREFIX) :]: v for k, v in wrapped.state_dict().items() if k.startswith(_PREFIX)}


def load_model_state_dict(wrapped: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of `model_state_dict`."""
    wrapped.load_state_dict({_PREFIX + k: v for k, v in state.items()})
