"""`RequestBatch`: the one type that crosses from the data pipeline to the model.

Request-level batching (RLB) means one row per user request: the history (and user side) is
stored, moved and encoded once per request, however many targets (candidates) the request has.
Pointwise batching is the same type with exactly one target per request, so every comparison
between the two is a config switch.

All sequence features travel in ONE KeyedJaggedTensor (``sparse``) whose stride is the number of
requests ``B``:

* history keys (``hist_*``): one row per request, length = number of history events served;
* candidate keys (``tgt_*``): one row per request, length = number of targets of that request.

Keeping them in one KJT lets the model look everything up with a single call of one
EmbeddingCollection (the item and category tables are shared between history and targets),
which is what TorchRec's TrainPipelineSparseDist needs to overlap the input all-to-all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

#: Sequence keys of the history, in KJT order.
HISTORY_KEYS: tuple[str, ...] = (
    "hist_item_id",
    "hist_category_id",
    "hist_action",
    "hist_dt_bucket",
)
#: Candidate keys, in KJT order.
TARGET_KEYS: tuple[str, ...] = ("tgt_item_id", "tgt_category_id")
#: Number of log2 buckets of ``request_ts - hist_ts`` (seconds): ``floor(2*log2(1+dt))``, capped.
NUM_DT_BUCKETS = 64


@dataclass
class RequestBatch(Pipelineable):
    """A batch of ``B`` requests holding ``N = num_targets.sum()`` targets.

    Attributes:
        sparse: KJT with keys ``HISTORY_KEYS + TARGET_KEYS``, stride ``B``.
        num_targets: ``[B]`` int64, targets per request (``N`` in total).
        labels: ``[N, num_tasks]`` float32, targets in request order.
        request_ids: ``[B]`` int64.
        user_ids: ``[B]`` int64.
        dense: ``[B, num_dense]`` float32 user/context features (may have zero columns).
    """

    sparse: KeyedJaggedTensor
    num_targets: torch.Tensor
    labels: torch.Tensor
    request_ids: torch.Tensor
    user_ids: torch.Tensor
    dense: torch.Tensor

    @property
    def batch_size(self) -> int:
        """Number of requests ``B``."""
        return int(self.num_targets.numel())

    def history_lengths(self) -> torch.Tensor:
        """``[B]`` number of history events served per request."""
        return self.sparse["hist_item_id"].lengths()

    def to(self, device: torch.device, non_blocking: bool = False) -> RequestBatch:
        return RequestBatch(
            sparse=self.sparse.to(device=device, non_blocking=non_blocking),
            num_targets=self.num_targets.to(device=device, non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            request_ids=self.request_ids.to(device=device, non_blocking=non_blocking),
            user_ids=self.user_ids.to(device=device, non_blocking=non_blocking),
            dense=self.dense.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        self.sparse.record_stream(stream)
        for t in (self.num_targets, self.labels, self.request_ids, self.user_ids, self.dense):
            t.record_stream(stream)

    def pin_memory(self) -> RequestBatch:
        return RequestBatch(
            sparse=self.sparse.pin_memory(),
            num_targets=self.num_targets.pin_memory(),
            labels=self.labels.pin_memory(),
            request_ids=self.request_ids.pin_memory(),
            user_ids=self.user_ids.pin_memory(),
            dense=self.dense.pin_memory(),
        )
