"""Wrap a `LongSeqModel` for distributed training: TorchRec DMP for the tables, DDP or FSDP2
(``sharding.dense``, `longseq.parallel.dense`) for the rest.

The model itself stays a plain nn.Module; this is the only place that knows about sharding.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.types import ShardingEnv

from longseq.parallel.dense import data_parallel_wrapper
from longseq.parallel.sharding import (
    ShardingConfig,
    attach_sparse_optimizer,
    build_plan,
    find_embedding_collection,
)


def shard_model(
    model: nn.Module,
    cfg: ShardingConfig,
    device: torch.device,
    pg: dist.ProcessGroup | None = None,
) -> DistributedModelParallel:
    """Attach the fused sparse optimizer, plan, and wrap ``model`` in DMP (dense part in DDP or
    FSDP2 per ``cfg.dense``). ``cfg`` was validated by the job's entry point
    (`ShardingConfig.validate`)."""
    pg = pg or dist.group.WORLD
    world = dist.get_world_size(pg)
    attach_sparse_optimizer(find_embedding_collection(model)[1], cfg)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    plan = build_plan(model, cfg, world, device.type, local_world_size=local)
    return DistributedModelParallel(
        model,
        env=ShardingEnv.from_process_group(pg),
        device=device,
        plan=plan,
        sharders=[EmbeddingCollectionSharder()],
        data_parallel_wrapper=data_parallel_wrapper(cfg.dense),
    )
