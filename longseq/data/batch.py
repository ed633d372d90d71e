"""`RequestBatch`: the one type that crosses from the data pipeline to the model.

Request-level batching (RLB) means one row per user request: the history (and user side) is
stored, moved and encoded once per request, however many targets (candidates) the request has.
Pointwise batching is the same type with exactly one target per request, so every comparison
between the two is a config switch.

All sequence features travel in ONE KeyedJaggedTensor (``sparse``) whose stride is the number of
requests ``B``:

* history keys (``hist_*``): one row per request, length = number of history events served;
* candidate keys (``tgt_*``): one row per request, length = number of targets of that request;
* declared sparse side features (`longseq.data.features`), after those: a user/context feature
  ``feat_<name>`` has one row per request (length 1 for an ``id``, the list's length for a
  ``multi_hot``), a candidate feature ``tgt_feat_<name>`` one row per request holding its
  targets' ids (a ``multi_hot`` one: its targets' lists end to end; ``tgt_bags`` splits them).

Keeping them in one KJT lets the model look everything up with a single call of one
EmbeddingCollection (the item and category tables are shared between history and targets),
which is what TorchRec's TrainPipelineSparseDist needs to overlap the input all-to-all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        dense: ``[B, num_dense]`` float32 user/context dense features, transformed, in
            declaration order (may have zero columns).
        tgt_dense: ``[N, n]`` float32 candidate dense features, transformed.
        tgt_bags: ``[N, n]`` int64 list lengths of the candidate ``multi_hot`` features (how
            each request's ``tgt_feat_<name>`` ids split into its targets' lists).
    """

    sparse: KeyedJaggedTensor
    num_targets: torch.Tensor
    labels: torch.Tensor
    request_ids: torch.Tensor
    user_ids: torch.Tensor
    dense: torch.Tensor
    tgt_dense: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))
    tgt_bags: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.int64))

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.num_targets, self.labels, self.request_ids, self.user_ids, self.dense,
                self.tgt_dense, self.tgt_bags)  # fmt: skip

    @property
    def batch_size(self) -> int:
        """Number of requests ``B``."""
        return int(self.num_targets.numel())

    def history_lengths(self) -> torch.Tensor:
        """``[B]`` number of history events served per request."""
        return self.sparse["hist_item_id"].lengths()

    def to(self, device: torch.device, non_blocking: bool = False) -> RequestBatch:
        return RequestBatch(
            self.sparse.to(device=device, non_blocking=non_blocking),
            *(t.to(device=device, non_blocking=non_blocking) for t in self._tensors()),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        self.sparse.record_stream(stream)
        for t in self._tensors():
            t.record_stream(stream)

    def pin_memory(self) -> RequestBatch:
        return RequestBatch(self.sparse.pin_memory(), *(t.pin_memory() for t in self._tensors()))
