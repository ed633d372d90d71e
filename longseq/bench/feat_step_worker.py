"""Rank side of the ``feat_step`` suite: the trainer's step of four model variants, interleaved.

Run on one rank through `longseq.parallel.spawn.run_ranks` (gloo on CPU, NCCL on CUDA). The model
config is ``experiment=long1k`` as ``python -m longseq.train`` composes it (``model: small``,
STCA with the position bias), the sharding its default (item row-wise, other tables table-wise,
fused row-wise Adagrad in backward, DDP). Each variant is a `LongSeqModel` sharded by
`shard_model`, stepped as the trainer steps it (forward, loss, backward with the fused sparse
update, then `longseq.train.optim.build_optimizer`'s step: dense gradients clipped, AdamW) on the same requests, collated once
without and once with the side features (collation is timed apart, outside the step).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import warnings
from typing import Any

import torch

from longseq.bench.common import tune_malloc
from longseq.bench.feat_data import FEATURE_SETS, with_features
from longseq.bench.rlb_data import VOCAB, request_table
from longseq.bench.timing import measure_interleaved
from longseq.data.collate import collate
from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel
from longseq.parallel.wrap import shard_model

TASKS = ["click"]
#: variant -> (feature set, head)
VARIANTS: dict[str, tuple[str, str]] = {
    "none_mlp": ("none", "mlp"),
    "feat_mlp": ("user+cand", "mlp"),
    "feat_rankmixer": ("user+cand", "rankmixer"),
    "none_rankmixer": ("none", "rankmixer"),
    "none_mlp_control": ("none", "mlp"),  # a second copy of the reference: the noise floor
}


def compose_long1k() -> Any:
    """The training job ``experiment=long1k`` (default sharding: planner off)."""
    from longseq.train.plan_table import compose_job

    job = compose_job("long1k")
    job.sharding.planner = False  # compose_job plans with TorchRec's planner; the trainer doesn't
    return job


def _stepper(job: Any, feats: str, head: str, device: torch.device) -> tuple[Any, Any, int]:
    """A step function of one variant, its DMP and its dense parameter count."""
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from longseq.train.optim import build_optimizer

    cfg = dataclasses.replace(job.model, head=head)
    torch.manual_seed(0)
    model = LongSeqModel(cfg, TableSizes(**VOCAB), TASKS, "meta", FEATURE_SETS[feats])
    dmp = shard_model(model, job.sharding, device)
    dmp.train()
    opt = build_optimizer(dmp, job.trainer.dense)  # fused sparse + AdamW, dense grads clipped

    def step(batch: Any) -> None:
        logits = dmp(batch)
        model.loss(logits.float(), batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    dense = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    return step, dmp, sum(p.numel() for p in dense)


#: forward-time parts: name -> the module (under the model) whose forward it times
PARTS = {"lookup": "ec", "interaction": "interaction", "tower": "interaction.tower",
         "head": "interaction.head"}  # fmt: skip


def _time_forward(module: torch.nn.Module, part: str, spent: dict[str, float]) -> list[Any]:
    """Hooks adding ``module``'s forward seconds to ``spent[part]``."""

    def pre(*_: Any) -> None:
        spent[part] = spent.get(part, 0.0) - time.perf_counter()

    def post(*_: Any) -> None:
        spent[part] += time.perf_counter()

    return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def forward_parts(
    dmps: dict[str, Any], batches: dict[str, Any], reps: int
) -> dict[str, dict[str, float]]:
    """Median forward milliseconds of each variant's `PARTS` (forward hooks, no grad, rounds
    round-robin): ``lookup`` (the sharded EC, all tables), ``tower``, ``head`` (RankMixer's
    mixer or the MLP), ``other`` (tokens, side-feature pooling, RankMixer's user-token
    projection, padding), ``total`` (the model's forward)."""
    acc: dict[str, dict[str, list[float]]] = {v: {} for v in dmps}
    for rep in range(reps + 1):  # the first round warms up
        for name, dmp in dmps.items():
            mods = dict(dmp.module.named_modules())
            spent: dict[str, float] = {}
            hooks = [h for part, path in PARTS.items()
                     for h in _time_forward(mods.get(path) or mods[f"module.{path}"], part, spent)]  # fmt: skip
            t0 = time.perf_counter()
            with torch.no_grad():
                dmp(batches[name])
            spent["total"] = time.perf_counter() - t0
            for h in hooks:
                h.remove()
            spent["other"] = spent["interaction"] - spent["tower"] - spent["head"]
            if rep:
                for k, v in spent.items():
                    acc[name].setdefault(k, []).append(v * 1e3)
    return {v: {k: statistics.median(x) for k, x in d.items()} for v, d in acc.items()}


def worker(rank: int, world: int, spec: dict[str, Any]) -> dict[str, Any]:
    """Time every variant of `VARIANTS` round-robin; return timings, collation and config."""
    warnings.filterwarnings("ignore", category=FutureWarning)  # torchrec's DDP deprecations
    tune_malloc()
    device = torch.device(spec["device"])
    job = compose_long1k()
    b = spec["requests"] or job.data.batch_size
    table = request_table(b, spec["targets"], spec["length"], seed=rank)
    table = with_features(table, FEATURE_SETS["user+cand"], seed=rank)
    batches, collators = {}, {}
    for fs in ("none", "user+cand"):
        batches[fs] = collate(table, TASKS, features=FEATURE_SETS[fs]).to(device)
        collators[fs] = lambda f=FEATURE_SETS[fs]: collate(table, TASKS, features=f)
    collate_s = {k: t.median_s for k, t in measure_interleaved(collators, 5, 1, device).items()}
    fns, params, dmps = {}, {}, {}
    for name, (fs, head) in VARIANTS.items():
        step, dmps[name], params[name] = _stepper(job, fs, head, device)
        fns[name] = lambda s=step, bt=batches[fs]: s(bt)
    timings = measure_interleaved(fns, spec["reps"], spec["warmup"], device)
    var_batches = {name: batches[fs] for name, (fs, _) in VARIANTS.items()}
    parts = forward_parts(dmps, var_batches, spec["reps"]) if device.type == "cpu" else {}
    return {
        "threads": torch.get_num_threads(),
        "requests": b,
        "targets": spec["targets"],
        "length": spec["length"],
        "model": dataclasses.asdict(job.model),
        "sharding": dataclasses.asdict(job.sharding),
        "dense_params": params,
        "collate_s": collate_s,
        "timings": {k: t.to_dict() for k, t in timings.items()},
        "forward_ms": parts,
    }
