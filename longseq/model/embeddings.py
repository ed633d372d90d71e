"""The TorchRec EmbeddingCollection of the sequence features (unsharded; sharding lives in
``longseq.parallel``).

Item and category tables are shared by history and targets, so a single lookup per batch serves
both (one sharded-module call per forward: what TrainPipelineSparseDist needs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection

from longseq.data.batch import NUM_DT_BUCKETS


@dataclass
class TableSizes:
    """Vocabulary sizes, read from the data set's ``meta.json``."""

    num_items: int
    num_categories: int
    num_actions: int
    num_dt_buckets: int = NUM_DT_BUCKETS


#: table name -> features it serves
TABLE_FEATURES: dict[str, list[str]] = {
    "item": ["hist_item_id", "tgt_item_id"],
    "category": ["hist_category_id", "tgt_category_id"],
    "action": ["hist_action"],
    "dt_bucket": ["hist_dt_bucket"],
}


def table_configs(sizes: TableSizes, dim: int, init_std: float = 0.1) -> list[EmbeddingConfig]:
    """EmbeddingConfigs of the four tables (all of width ``dim``: an EC requirement)."""
    rows = {
        "item": sizes.num_items,
        "category": sizes.num_categories,
        "action": sizes.num_actions,
        "dt_bucket": sizes.num_dt_buckets,
    }

    def init(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.init.normal_(t, std=init_std)

    return [
        EmbeddingConfig(
            name=name,
            embedding_dim=dim,
            num_embeddings=rows[name],
            feature_names=feats,
            init_fn=init,
        )
        for name, feats in TABLE_FEATURES.items()
    ]


def build_embedding_collection(
    sizes: TableSizes, dim: int, device: torch.device | str = "cpu", init_std: float = 0.1
) -> EmbeddingCollection:
    """The unsharded EmbeddingCollection (``device="meta"`` to let sharding allocate it)."""
    return EmbeddingCollection(
        tables=table_configs(sizes, dim, init_std), device=torch.device(device)
    )
