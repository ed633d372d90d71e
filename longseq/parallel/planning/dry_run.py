"""``dry_run=true``: plan the sharding for a declared topology and estimate memory, no cluster.

Builds the model on the meta device (no table memory), runs the same plan builder as training
(explicit per-table types or TorchRec's planner) for the declared topology and reports the
per-rank plan and the embedding memory per rank (weights + optimizer state).
``python -m longseq.train ... dry_run=true`` prints it for the job's ``dry_run_topology``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from longseq.data.features import FeatureSpec
from longseq.model.model import LongSeqModel, ModelConfig
from longseq.parallel.planning.topology import TopologyConfig
from longseq.parallel.sharding import ShardingConfig, build_plan, find_embedding_collection

#: optimizer state bytes per table row (per element for Adam/Adagrad), fp32
_STATE = {
    "row_wise_adagrad": ("row", 1),
    "adagrad": ("elem", 1),
    "adam": ("elem", 2),
    "sgd": ("elem", 0),
}


def dry_run(
    model_cfg: ModelConfig,
    sharding: ShardingConfig,
    topo: TopologyConfig,
    sizes: Any,
    tasks: list[str],
    features: Sequence[FeatureSpec] = (),
) -> str:
    """The report of a job's model (``model_cfg``, its tables of ``sizes``, heads for
    ``tasks``) sharded per ``sharding`` over ``topo``: the plan and the per-rank embedding memory
    estimate (weights + optimizer state), then the dense parameters' memory per rank. The
    tables of the data set's sparse side ``features`` are planned with the others."""
    model = LongSeqModel(model_cfg, sizes, tasks, device="meta", features=features)
    world = topo.nodes * topo.gpus_per_node
    plan = build_plan(
        model,
        sharding,
        world,
        topo.compute_device,
        local_world_size=topo.gpus_per_node,
        hbm_gb=topo.hbm_gb,
    )
    kind, per = _STATE.get(sharding.sparse_optimizer, ("elem", 0))
    mem: dict[int, float] = defaultdict(float)
    path, ec = find_embedding_collection(model)
    for table, ps in plan.plan[path].items():
        if ps.sharding_spec is None:  # data parallel: a full copy everywhere
            cfg_t = next(c for c in ec.embedding_configs() if c.name == table)
            rows, cols = cfg_t.num_embeddings, cfg_t.embedding_dim
            for r in range(world):
                mem[r] += rows * cols * 4 * (1 + (per if kind == "elem" else 0))
            continue
        for shard in ps.sharding_spec.shards:
            rows, cols = shard.shard_sizes
            state = rows * per if kind == "row" else rows * cols * per
            mem[shard.placement.rank()] += (rows * cols + state) * 4
    dense = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("ec."))
    lines = [
        f"dry run: {topo.nodes} nodes x {topo.gpus_per_node} {topo.compute_device} "
        f"({topo.hbm_gb:g} GB each), sparse optimizer {sharding.sparse_optimizer}",
        str(plan),
        "",
        "| rank | embedding weights + optimizer state (GB) |",
        "|---|---|",
    ]
    lines += [f"| {r} | {mem[r] / 1024**3:.3f} |" for r in range(world)]
    if sharding.dense == "fsdp2":  # weights, grads and AdamW states sharded over all ranks
        how, per_rank = f"FSDP2-sharded over {world} ranks", dense * 16 / world
    else:
        how, per_rank = "DDP-replicated", dense * 16
    lines.append(
        f"\ndense parameters ({how}; weights + grads + AdamW state x2): {dense:,} "
        f"= {per_rank / 1024**3:.3f} GB per rank"
    )
    return "\n".join(lines)
