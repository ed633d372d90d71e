"""The TorchRec EmbeddingCollection of the sequence and side features (unsharded; sharding
lives in ``longseq.parallel``).

Item and category tables are shared by history and targets, and every declared sparse side
feature (`longseq.data.features`) has a table ``feat_<name>`` in the same collection, so a single
lookup per batch serves them all (one sharded-module call per forward: what
TrainPipelineSparseDist needs; the planner and ``sharding.tables`` see every table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection

from longseq.data.batch import NUM_DT_BUCKETS
from longseq.data.features import FeatureSpec


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


def feature_table(f: FeatureSpec) -> str:
    """The table name of the sparse side feature ``f``: ``feat_<name>``."""
    return f"feat_{f.name}"


def table_features(features: Sequence[FeatureSpec] = ()) -> dict[str, list[str]]:
    """Table name -> the KJT features it serves: `TABLE_FEATURES` plus one table per sparse
    side feature."""
    out = {k: list(v) for k, v in TABLE_FEATURES.items()}
    out.update({feature_table(f): [f.key] for f in features if f.sparse})
    return out


def table_configs(
    sizes: TableSizes, dim: int, init_std: float = 0.1, features: Sequence[FeatureSpec] = ()
) -> list[EmbeddingConfig]:
    """EmbeddingConfigs of the four sequence tables and of the sparse side ``features`` (all
    of width ``dim``: an EC requirement)."""
    rows = {
        "item": sizes.num_items,
        "category": sizes.num_categories,
        "action": sizes.num_actions,
        "dt_bucket": sizes.num_dt_buckets,
    }
    rows.update({feature_table(f): f.cardinality for f in features if f.sparse})

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
        for name, feats in table_features(features).items()
    ]


def build_embedding_collection(
    sizes: TableSizes,
    dim: int,
    device: torch.device | str = "cpu",
    init_std: float = 0.1,
    features: Sequence[FeatureSpec] = (),
) -> EmbeddingCollection:
    """The unsharded EmbeddingCollection (``device="meta"`` to let sharding allocate it)."""
    return EmbeddingCollection(
        tables=table_configs(sizes, dim, init_std, features), device=torch.device(device)
    )
