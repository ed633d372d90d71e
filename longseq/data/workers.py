"""Data-loader worker processes for the training stream (``data.num_workers > 0``).

Each of the rank's N workers runs its own `Batcher` (its own part of the rank's share: every
request is still read once per epoch) and yields ``(batch, logical_worker, position_after)``.
torch's DataLoader (``in_order``, the default) takes one batch from each worker in turn, and the
streams are endless, so batch ``i`` of a run comes from logical worker ``(start + i) % N``.
On resume, DataLoader worker ``k`` plays logical worker ``(start + k) % N`` where ``start`` is the
logical worker that was due next: the interleaving continues exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from longseq.data.batch import RequestBatch
from longseq.data.batcher import StreamSpec


class WorkerStreams(IterableDataset):
    """The endless batch streams of the rank's logical workers, one per DataLoader worker."""

    def __init__(
        self, spec: StreamSpec, positions: list[dict[str, Any]] | None, start: int
    ) -> None:
        super().__init__()
        self.spec, self.positions, self.start = spec, positions, start

    def __iter__(self) -> Iterator[tuple[RequestBatch, int, dict[str, Any]]]:
        info = get_worker_info()
        if info is None or info.num_workers != self.spec.streams:
            raise RuntimeError(
                f"WorkerStreams must run in a DataLoader with {self.spec.streams} workers"
            )
        logical = (info.id + self.start) % self.spec.streams
        batcher = self.spec.batcher(logical)
        if self.positions is not None:
            batcher.load_position(self.positions[logical])
        while True:
            batch = batcher.next_batch()
            yield batch, logical, batcher.position()


def worker_loader(
    spec: StreamSpec,
    positions: list[dict[str, Any]] | None,
    start: int,
    device: torch.device,
    prefetch_factor: int = 2,
) -> Iterator[tuple[RequestBatch, int, dict[str, Any]]]:
    """An iterator over the interleaved worker streams (pinned memory when ``device`` is CUDA)."""
    loader = DataLoader(
        WorkerStreams(spec, positions, start),
        batch_size=None,
        num_workers=spec.num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=prefetch_factor,
        in_order=True,
    )
    return iter(loader)
