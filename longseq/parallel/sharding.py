"""Sharding plans for the embedding tables, with the CPU/gloo limits turned into config errors.

Two ways to shard, chosen by config: an explicit sharding type per table (``tables``), or
TorchRec's planner with a declared topology (``planner: true``). Sparse tables always get a fused
optimizer applied in backward: on CPU that also avoids the broken ``dense`` EmbeddingCollection
kernel (docs/platform.md limit 2).

How to add a sharding type: add one entry to `PLAN_BUILDERS` (name -> function of the table's
index and the world size that returns TorchRec's per-parameter sharding generator, e.g. from
``torchrec.distributed.sharding_plan``); if it cannot run on CPU/gloo, also name it in
`GPU_ONLY` with the reason. `SHARDING_TYPES`, the config check and `build_plan` read that table;
``tests/dist/test_sharding_plan.py`` checks every entry builds the plan it names.

``table_row_wise`` is not offered: TorchRec's EmbeddingCollectionSharder (sequence tables) does
not support it on any device (torchrec 1.8 ``ShardedEmbeddingCollection`` raises ``Sharding not
supported table_row_wise``; its ``sharding_types()`` lists data_parallel, table_wise,
column_wise and row_wise only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.sharding_plan import (
    column_wise,
    construct_module_sharding_plan,
    data_parallel,
    row_wise,
    table_wise,
)
from torchrec.distributed.types import ShardingPlan
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

#: always the fused kernel: the "dense" EC kernel breaks on CPU (docs/platform.md limit 2)
FUSED = "fused"

#: sharding type -> ``builder(table_index, world_size)`` returning TorchRec's per-parameter
#: sharding generator for `construct_module_sharding_plan`. Table-wise tables go round-robin.
PLAN_BUILDERS: dict[str, Callable[[int, int], Any]] = {
    "table_wise": lambda i, world: table_wise(rank=i % world, compute_kernel=FUSED),
    "row_wise": lambda i, world: row_wise(compute_kernel=FUSED),
    "column_wise": lambda i, world: column_wise(ranks=list(range(world)), compute_kernel=FUSED),
    # replicated on every rank, DDP-synchronised; TorchRec gives it the "dense" kernel
    "data_parallel": lambda i, world: data_parallel(),
}
#: sharding types refused on CPU/gloo, with the reason (the config error quotes it)
GPU_ONLY: dict[str, str] = {
    "data_parallel": "data-parallel sequence (EmbeddingCollection) tables use the 'dense' "
    "kernel, whose FBGEMM CPU path ignores 'no pooling' (a split_with_sizes error; "
    "docs/platform.md limit 2)",
}
#: the sharding types a table may name in ``sharding.tables``
SHARDING_TYPES = tuple(PLAN_BUILDERS)
#: the type of a table that ``sharding.tables`` does not name
DEFAULT_TABLE_SHARDING = "table_wise"
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
        tables: sharding type (one of `SHARDING_TYPES`) per table name (``item``,
            ``category``, ``action``, ``dt_bucket``; another name is an error when the plan is
            built); tables not listed are table-wise, placed round-robin.
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

    def validate(self, device_type: str, prefix: str = "sharding", tables_key: str = "") -> None:
        """Raise ``ValueError`` naming the key for combinations that cannot work here
        (``tables_key``: the config key of ``tables``, default ``<prefix>.tables``)."""
        tables_key = tables_key or f"{prefix}.tables"
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
                raise ValueError(f"{tables_key}.{name}={kind!r}: choose one of {SHARDING_TYPES}")
            if kind in GPU_ONLY and device_type == "cpu":
                usable = [t for t in SHARDING_TYPES if t not in GPU_ONLY]
                raise ValueError(
                    f"{tables_key}.{name}={kind}: not supported on CPU/gloo: "
                    f"{GPU_ONLY[kind]}; use one of {usable}"
                )

    def check_table_names(self, names: list[str], tables_key: str = "sharding.tables") -> None:
        """Raise ``ValueError`` naming ``<tables_key>.<name>`` for a table the model lacks."""
        for name in self.tables:
            if name not in names:
                raise ValueError(
                    f"{tables_key}.{name}: the model has no table {name!r}; "
                    f"its tables are {sorted(names)}"
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


def make_planner(
    ec: EmbeddingCollection,
    cfg: ShardingConfig,
    world_size: int,
    device_type: str,
    local_world_size: int | None = None,
    hbm_gb: float | None = None,
    batch_size: int | None = None,
    pooling_factors: dict[str, list[float]] | None = None,
) -> tuple[EmbeddingShardingPlanner, list[EmbeddingCollectionSharder]]:
    """TorchRec's planner for ``ec``'s tables on a declared topology, with longseq's CPU limits
    (docs/platform.md limits 2, 3) and optional per-table pooling factors (ids per request and
    feature, for its perf and storage estimates), and the sharders to plan with:
    ``planner.plan(model, sharders)``."""
    names = [c.name for c in ec.embedding_configs()]
    topo = Topology(
        world_size=world_size,
        compute_device=device_type,
        local_world_size=local_world_size or world_size,
        **({"hbm_cap": int(hbm_gb * 1024**3)} if hbm_gb else {}),
    )
    kw: dict[str, dict[str, Any]] = {name: {} for name in names}
    if device_type == "cpu":  # off what breaks on CPU (docs/platform.md limits 2, 3)
        for name in names:
            kw[name]["sharding_types"] = [t for t in SHARDING_TYPES if t not in GPU_ONLY]
            kw[name]["compute_kernels"] = ["fused"]
    for name, factors in (pooling_factors or {}).items():
        kw[name]["pooling_factors"] = list(factors)
    constraints = {n: ParameterConstraints(**k) for n, k in kw.items() if k} or None
    planner = EmbeddingShardingPlanner(
        topology=topo, constraints=constraints, batch_size=batch_size
    )
    return planner, [EmbeddingCollectionSharder()]


def build_plan(
    model: nn.Module,
    cfg: ShardingConfig,
    world_size: int,
    device_type: str,
    local_world_size: int | None = None,
    hbm_gb: float | None = None,
) -> ShardingPlan:
    """The ShardingPlan for the model's EmbeddingCollection (explicit per-table types, or the
    planner). ``cfg`` was validated by the job's entry point (`ShardingConfig.validate`)."""
    path, ec = find_embedding_collection(model)
    names = [c.name for c in ec.embedding_configs()]
    cfg.check_table_names(names)
    sharder = EmbeddingCollectionSharder()
    if cfg.planner:
        planner, sharders = make_planner(ec, cfg, world_size, device_type, local_world_size, hbm_gb)
        return planner.plan(model, sharders)
    per_param = {
        name: PLAN_BUILDERS[cfg.tables.get(name, DEFAULT_TABLE_SHARDING)](i, world_size)
        for i, name in enumerate(names)
    }
    module_plan = construct_module_sharding_plan(
        ec,
        per_param_sharding=per_param,
        sharder=sharder,
        local_size=local_world_size or world_size,
        world_size=world_size,
        device_type=device_type,
    )
    return ShardingPlan({path: module_plan})
