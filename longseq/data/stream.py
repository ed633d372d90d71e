"""The training input: a position-tracking stream of collated `RequestBatch`es.

`BatchStream` produces the rank's batches, in the training process (``num_workers=0``) or in
data-loader worker processes (`longseq.data.workers`), and remembers after every produced batch
the position of every logical worker, so a checkpoint records the position after the last
*trained* batch even when a pipeline (or the workers) already prepared the next ones.
`build_train_stream` is what the trainer calls: everything about how data is read and batched
lives here, in the data package.

Guarantees (tested in tests/data/test_stream.py and test_workers.py): every batch has
``batch_size`` requests on every rank (no epoch tail; token-budget batching excepted); every
request of the split is read once per epoch over all ranks x workers; a stream resumed from
``position_after(c)`` yields exactly the batches after the first ``c``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from longseq.data.batch import RequestBatch
from longseq.data.batcher import Batcher, StreamSpec
from longseq.data.config import DataConfig
from longseq.data.features import FeatureSpec
from longseq.data.reader import STATE_VERSION

#: Position format of `BatchStream.position_after`.
POSITION_VERSION = 2


class BatchStream:
    """Iterator of `RequestBatch` that records every worker's position after each batch.

    Args:
        spec: the rank's stream (split, batch size, rank, workers, windows, ...).
        device: batches are moved there (``non_blocking``; pinned first under workers on CUDA).
        prefetch_factor: batches each worker prepares ahead (``num_workers > 0``).
    """

    def __init__(self, spec: StreamSpec, device: torch.device, prefetch_factor: int = 2) -> None:
        self.spec, self.device, self.prefetch_factor = spec, device, prefetch_factor
        self.streams = spec.streams
        self._batcher: Batcher | None = None if spec.num_workers else spec.batcher(0)
        self._it: Iterator | None = None  # created on first use, after any load_position
        self._loaded: list[dict[str, Any]] | None = None
        self.start = 0  # logical worker due first
        self.produced = 0
        self._workers = [self._initial(w) for w in range(self.streams)]
        self._positions: dict[int, list[dict[str, Any]]] = {0: list(self._workers)}

    def _initial(self, worker: int) -> dict[str, Any]:
        if self._batcher is not None:
            return self._batcher.position()
        parts = self.spec.world_size * self.streams
        reader = {
            "version": STATE_VERSION,
            "part": [self.spec.rank * self.streams + worker, parts],
            "epoch": 0,
            "window": 0,
            "offset": 0,
            "rows_emitted": 0,
            "batches_emitted": 0,
            "bad_rows": 0,
        }
        return {"reader": reader, "rng": self.spec.rng(worker).bit_generator.state}

    def __iter__(self) -> Iterator[RequestBatch]:
        return self

    def load_position(self, position: dict[str, Any]) -> None:
        """Resume from a position returned by `position_after` (before the first batch)."""
        if self.produced or self._it is not None:
            raise RuntimeError("BatchStream.load_position must be called before iterating")
        if "workers" not in position:  # a one-stream position written before workers existed
            workers, start = [{"reader": position["reader"], "rng": position["rng"]}], 0
            if self.streams != 1:
                raise ValueError(
                    "the checkpoint's data position was written without data.num_workers: "
                    "resume it with data.num_workers=0 (or 1)"
                )
        else:
            workers, start = list(position["workers"]), int(position["next_worker"])
            if len(workers) != self.streams:
                raise ValueError(
                    f"the checkpoint's data position has {len(workers)} reader stream(s) "
                    f"(data.num_workers={position.get('num_workers')}), this run "
                    f"{self.streams} (data.num_workers={self.spec.num_workers}): resume with "
                    "the same data.num_workers (0 and 1 are interchangeable)"
                )
        if self._batcher is not None:
            self._batcher.load_position(workers[0])
            workers = [self._batcher.position()]
        self._loaded, self.start = workers, start
        self._workers = list(workers)
        self._positions = {0: list(self._workers)}

    def __next__(self) -> RequestBatch:
        if self._batcher is not None:
            batch = self._batcher.next_batch()
            worker, pos = 0, self._batcher.position()
        else:
            if self._it is None:
                from longseq.data.workers import worker_loader

                self._it = worker_loader(
                    self.spec, self._loaded, self.start, self.device, self.prefetch_factor
                )
            batch, worker, pos = next(self._it)
            expected = (self.start + self.produced) % self.streams
            if worker != expected:  # would break exact resumption: never silently
                raise RuntimeError(f"batch from worker {worker}, expected worker {expected}")
        self._workers[worker] = pos
        self.produced += 1
        self._positions[self.produced] = list(self._workers)
        return batch.to(self.device, non_blocking=True)

    def position_after(self, consumed: int) -> dict[str, Any]:
        """Every worker's reader + RNG state after the first ``consumed`` batches (older ones
        are dropped). ``["reader"]`` sums the counters: ``rows_emitted`` = requests in those
        batches, ``bad_rows`` = requests skipped by ``on_bad_row=skip`` so far."""
        workers = self._positions[consumed]
        for k in [k for k in self._positions if k < consumed]:
            del self._positions[k]
        readers = [w["reader"] for w in workers]
        total = {
            k: sum(int(r.get(k, 0)) for r in readers)
            for k in ("rows_emitted", "batches_emitted", "bad_rows")
        }
        return {
            "version": POSITION_VERSION,
            "num_workers": self.spec.num_workers,
            "next_worker": (self.start + consumed) % self.streams,
            "workers": workers,
            "reader": {**total, "epoch": min(int(r["epoch"]) for r in readers)},
        }

    def close(self) -> None:
        """Stop the worker processes (if any)."""
        self._it = None


def build_train_stream(
    cfg: DataConfig,
    rank: int,
    world_size: int,
    seed: int,
    tasks: list[str],
    device: torch.device,
    features: Sequence[FeatureSpec] = (),
) -> BatchStream:
    """The trainer's input for one rank: an endless, shuffled, resumable `BatchStream`.
    ``cfg`` was validated by the job's entry point (`DataConfig.validate`); ``features``: the
    side features the model reads."""
    spec = StreamSpec(
        cfg, rank=rank, world_size=world_size, seed=seed, tasks=list(tasks),
        features=tuple(features),
    )  # fmt: skip
    return BatchStream(spec, device, cfg.prefetch_factor)
