"""Sharding plans for the embedding tables, with the CPU/gloo limits turned into config errors.

Two ways to shard, chosen by config: an explicit sharding type per table (``tables``), or
TorchRec's planner with a declared topology (``planner: true``). Sparse tables always get a fused
optimizer applied in backward: on CPU that also avoids the broken ``dense`` EmbeddingCollection
kernel (docs/stack-notes in stack.md, trap 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.sharding_plan import (
    column_wise,
    construct_module_sharding_plan,
    row_wise,
    table_wise,
)
from torchrec.distributed.types import ShardingPlan
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

#: always the fused kernel: the "dense" EC kernel breaks on CPU (stack.md trap 2)
FUSED = "fused"
SHARDING_TYPES = ("table_wise", "row_wise", "column_wise", "table_row_wise", "data_parallel")
SPARSE_OPTIMIZERS = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "row_wise_adagrad": RowWiseAdagrad,
    "adam": torch.optim.Adam,
}


@dataclass
class ShardingConfig:
    """How embedding tables are sharded and optimized.

    Attributes:
        tables: sharding type per table name (``item``, ``category``, ``action``,
            ``dt_bucket``); tables not listed are table-wise, placed round-robin.
        planner: use TorchRec's planner instead of ``tables``.
        sparse_optimizer: fused optimizer in backward: sgd | adagrad | row_wise_adagrad | adam.
        sparse_lr: its learning rate.
        dense: data parallelism of the dense (non-embedding) part: ``ddp`` (TorchRec's
            default, replicated weights) or ``fsdp2`` (``fully_shard``: weights, gradients and
            AdamW state sharded over the ranks; `longseq.parallel.dense`).
    """

    tables: dict[str, str] = field(default_factory=lambda: {"item": "row_wise"})
    planner: bool = False
    sparse_optimizer: str = "row_wise_adagrad"
    sparse_lr: float = 0.05
    dense: str = "ddp"

    def validate(self, device_type: str, prefix: str = "sharding") -> None:
        """Raise ``ValueError`` naming the key for combinations that cannot work here."""
        if self.dense not in ("ddp", "fsdp2"):
            raise ValueError(f"{prefix}.dense={self.dense!r}: choose one of ('ddp', 'fsdp2')")
        if self.sparse_optimizer not in SPARSE_OPTIMIZERS:
            raise ValueError(
                f"{prefix}.sparse_optimizer={self.sparse_optimizer!r}: "
                f"choose one of {sorted(SPARSE_OPTIMIZERS)}"
            )
        if self.sparse_optimizer == "adam" and device_type == "cpu":
            raise ValueError(
                f"{prefix}.sparse_optimizer=adam: FBGEMM's fused Adam is GPU-only "
                "('Optimizer adam is not supported in CPU mode'); use row_wise_adagrad on CPU"
            )
        for name, kind in self.tables.items():
            if kind not in SHARDING_TYPES:
                raise ValueError(f"{prefix}.tables.{name}={kind!r}: choose one of {SHARDING_TYPES}")
            if kind in ("table_row_wise", "data_parallel") and device_type == "cpu":
                raise ValueError(
                    f"{prefix}.tables.{name}={kind}: not supported for sequence "
                    "(EmbeddingCollection) tables on CPU/gloo (FBGEMM's CPU kernel ignores "
                    "'no pooling'); use table_wise, row_wise or column_wise"
                )


def find_embedding_collection(model: nn.Module) -> tuple[str, EmbeddingCollection]:
    """The (fully qualified name, module) of the model's EmbeddingCollection."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, EmbeddingCollection)]
    if len(found) != 1:
        raise ValueError(f"expected exactly one EmbeddingCollection, found {[n for n, _ in found]}")
    return found[0]


def attach_sparse_optimizer(ec: nn.Module, cfg: ShardingConfig) -> None:
    """Apply the fused sparse optimizer in backward to every table weight of ``ec``."""
    params = list(ec.parameters())
    if not params:
        raise ValueError("the embedding collection has no tables to attach the optimizer to")
    kwargs = {"lr": cfg.sparse_lr}
    if cfg.sparse_optimizer in ("row_wise_adagrad", "adagrad"):
        kwargs["eps"] = 1e-8
    apply_optimizer_in_backward(SPARSE_OPTIMIZERS[cfg.sparse_optimizer], params, kwargs)


def build_plan(
    model: nn.Module,
    cfg: ShardingConfig,
    world_size: int,
    device_type: str,
    local_world_size: int | None = None,
    hbm_gb: float | None = None,
) -> ShardingPlan:
    """The ShardingPlan for the model's EmbeddingCollection (explicit per-table types, or the
    planner)."""
    path, ec = find_embedding_collection(model)
    cfg.validate(device_type)
    sharder = EmbeddingCollectionSharder()
    if cfg.planner:
        topo = Topology(
            world_size=world_size,
            compute_device=device_type,
            local_world_size=local_world_size or world_size,
            **({"hbm_cap": int(hbm_gb * 1024**3)} if hbm_gb else {}),
        )
        constraints = None
        if device_type == "cpu":  # keep the planner off what breaks on CPU (stack.md traps 2, 3)
            constraints = {
                c.name: ParameterConstraints(
                    sharding_types=["table_wise", "row_wise", "column_wise"],
                    compute_kernels=["fused"],
                )
                for c in ec.embedding_configs()
            }
        planner = EmbeddingShardingPlanner(topology=topo, constraints=constraints)
        return planner.plan(model, [sharder])
    per_param = {}
    names = [c.name for c in ec.embedding_configs()]
    for i, name in enumerate(names):
        kind = cfg.tables.get(name, "table_wise")
        if kind == "row_wise":
            per_param[name] = row_wise(compute_kernel=FUSED)
        elif kind == "column_wise":
            per_param[name] = column_wise(ranks=list(range(world_size)), compute_kernel=FUSED)
        else:  # table_wise: spread tables over ranks round-robin
            per_param[name] = table_wise(rank=i % world_size, compute_kernel=FUSED)
    module_plan = construct_module_sharding_plan(
        ec,
        per_param_sharding=per_param,
        sharder=sharder,
        local_size=local_world_size or world_size,
        world_size=world_size,
        device_type=device_type,
    )
    return ShardingPlan({path: module_plan})
