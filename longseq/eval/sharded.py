"""Evaluation with the embedding tables sharded over the ranks (``sharded=true`` under torchrun).

The default distributed evaluation replicates the whole model on every rank, so every table must
fit in one process. Here the model is rebuilt the way the trainer builds it: tables on the meta
device, sharded by TorchRec's `DistributedModelParallel` with a `ShardingConfig` (the trainer's
code, `longseq.parallel.wrap.shard_model`), then the checkpoint is loaded with DCP, which
reshards from whatever world size wrote it. Each lookup is then a collective: every rank must run
the same number of forwards (`longseq.eval.predict.predict` with ``lockstep=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel, model_config_from_saved


def load_sharded_model(
    ckpt: Path, meta: dict[str, Any], tables: dict[str, str] | None = None
) -> LongSeqModel:
    """The checkpoint's model with its tables sharded over the current process group.

    Args:
        ckpt: a complete checkpoint folder.
        meta: its ``longseq.json``.
        tables: sharding type per table (``ShardingConfig.tables``); None: the trainer's default.

    Returns the `LongSeqModel` inside the DMP wrapper (its ``ec`` is the sharded collection), in
    eval mode. Collective: call on every rank.
    """
    from longseq.parallel.checkpoint import load_checkpoint
    from longseq.parallel.sharding import ShardingConfig
    from longseq.parallel.wrap import shard_model
    from longseq.train.task import TrainTask, load_model_state_dict, model_state_dict

    mcfg = model_config_from_saved(meta["model"])
    model = LongSeqModel(mcfg, TableSizes(**meta["tables"]), meta["tasks"], device="meta")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        device = torch.device("cpu")
    cfg = ShardingConfig() if tables is None else ShardingConfig(tables=dict(tables))
    cfg.validate(device.type)
    dmp = shard_model(TrainTask(model, device_type=device.type), cfg, device)
    state = {"model": model_state_dict(dmp)}
    load_checkpoint(ckpt, state)
    load_model_state_dict(dmp, state["model"])
    dmp.eval()
    return model.eval()
