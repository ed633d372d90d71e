"""Rank side of the ``rlb`` suite: trainer steps and all-to-all byte counts (uses torchrec).

Run through `longseq.parallel.spawn.run_ranks`. Each rank builds its own synthetic requests,
collates them request-level and pointwise, and

* ``time``: times the trainer's step (sharded `LongSeqModel` via `shard_model`, fused sparse
  optimizer in backward, AdamW on the dense weights, gradient clipping) for both layouts,
  round-robin; collation is timed apart;
* ``count``: wraps ``torch.distributed.all_to_all_single`` and counts the bytes this rank puts
  into every all-to-all during the sharded embedding lookup's forward (ids, lengths, splits:
  integer tensors; embeddings: floating point) and backward (embedding gradients).
"""

from __future__ import annotations

import contextlib
import inspect
import time
import warnings
from typing import Any

import torch
import torch.distributed as dist

from longseq.bench.common import tune_malloc
from longseq.bench.rlb_data import VOCAB, batch_bytes, request_table
from longseq.bench.timing import measure_interleaved
from longseq.data.collate import collate
from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel, ModelConfig
from longseq.model.stca import STCAConfig
from longseq.parallel.sharding import ShardingConfig
from longseq.parallel.wrap import shard_model

TASKS = ["click"]


def build_dmp(model_cfg: dict[str, Any], device: torch.device) -> tuple[Any, LongSeqModel]:
    """The trainer's model: LongSeqModel on meta, sharded by `shard_model` (item row-wise)."""
    cfg = ModelConfig(**{**model_cfg, "stca": STCAConfig(**model_cfg["stca"])})
    torch.manual_seed(0)
    model = LongSeqModel(cfg, TableSizes(**VOCAB), TASKS, device="meta")
    dmp = shard_model(model, ShardingConfig(), device)
    return dmp, model


class A2ACounter:
    """Counts what this rank passes to ``all_to_all_single`` (total and to other ranks)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._orig = dist.all_to_all_single
        self._sig = inspect.signature(self._orig)

    def _wrapped(self, *args: Any, **kwargs: Any) -> Any:
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        x: torch.Tensor = bound.arguments["input"]
        group = bound.arguments.get("group")
        nbytes = x.numel() * x.element_size()
        rows = x.shape[0] if x.dim() else 1
        splits = bound.arguments.get("input_split_sizes")
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        own_rows = splits[rank] if splits else rows // world
        remote = nbytes - (nbytes // rows * own_rows if rows else 0)
        kind = "float" if x.is_floating_point() else "int"
        for key, val in ((f"{kind}_bytes", nbytes), (f"{kind}_remote_bytes", remote)):
            self.counts[key] = self.counts.get(key, 0) + val
        self.counts["calls"] = self.counts.get("calls", 0) + 1
        return self._orig(*args, **kwargs)

    @contextlib.contextmanager
    def active(self):
        """Install the wrapper (``torch.distributed.all_to_all_single``) for the block."""
        self.counts = {}
        dist.all_to_all_single = self._wrapped
        try:
            yield self
        finally:
            dist.all_to_all_single = self._orig


def _lookup(dmp: Any, kjt: Any) -> dict[str, Any]:
    out = dmp.module.ec(kjt)
    return out.wait() if hasattr(out, "wait") else out


def _count(dmp: Any, spec: dict[str, Any], rank: int) -> list[dict[str, Any]]:
    counter = A2ACounter()
    rows = []
    for length in spec["lengths"]:
        for t in spec["targets"]:
            table = request_table(spec["requests"], t, length, seed=1000 * rank + length + t)
            for layout in ("rlb", "pointwise"):
                batch = collate(table, TASKS, pointwise=layout == "pointwise")
                with counter.active():
                    emb = _lookup(dmp, batch.sparse)
                    fwd = dict(counter.counts)
                    loss = sum(jt.values().float().sum() for jt in emb.values())
                    loss.backward()
                    total = dict(counter.counts)
                bwd = {k: total.get(k, 0) - fwd.get(k, 0) for k in total}
                rows.append({
                    "length": length, "targets": t, "layout": layout,
                    "n_targets": int(batch.num_targets.sum()), "kjt": batch_bytes(batch),
                    "forward": fwd, "backward": bwd,
                })  # fmt: skip
    return rows


def _time(dmp: Any, model: LongSeqModel, spec: dict[str, Any], rank: int) -> list[dict[str, Any]]:
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    device = torch.device(spec["device"])
    dense = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    opt = torch.optim.AdamW(dense, lr=1e-3)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["dtype"] == "bf16")

    def step(batch: Any) -> None:
        with autocast:
            logits = dmp(batch)
        loss = model.loss(logits.float(), batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dense, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    rows = []
    dmp.train()
    n = spec["targets_per_step"]
    for length in spec["lengths"]:
        for t in spec["targets"]:
            table = request_table(n // t, t, length, seed=1000 * rank + length + t)
            batches, collate_s = {}, {}
            for layout in ("rlb", "pointwise"):
                t0 = time.perf_counter()
                batches[layout] = collate(table, TASKS, pointwise=layout == "pointwise")
                collate_s[layout] = time.perf_counter() - t0
                batches[layout] = batches[layout].to(device)
            fns = {k: (lambda b=b: step(b)) for k, b in batches.items()}
            timings = measure_interleaved(fns, spec["reps"], spec["warmup"], device)
            for layout, tm in timings.items():
                rows.append({
                    "length": length, "targets": t, "layout": layout,
                    "n_targets": int(batches[layout].num_targets.sum()),
                    "requests_per_rank": batches[layout].batch_size,
                    "median_s": tm.median_s, "reps_s": tm.reps_s,
                    "collate_s": collate_s[layout],
                })  # fmt: skip
    return rows


def worker(rank: int, world: int, spec: dict[str, Any]) -> dict[str, Any]:
    """One rank: ``spec["time"]`` and/or ``spec["count"]`` grids (see module docstring)."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # torchrec's DDP deprecations
    tune_malloc()
    device = torch.device(spec["device"])
    dmp, model = build_dmp(spec["model"], device)
    out: dict[str, Any] = {"rank": rank, "world": world, "threads": torch.get_num_threads()}
    if spec.get("count"):
        out["count"] = _count(dmp, spec["count"], rank)
    if spec.get("time"):
        out["time"] = _time(dmp, model, {**spec["time"], "device": spec["device"],
                                         "dtype": spec["dtype"]}, rank)  # fmt: skip
    return out
