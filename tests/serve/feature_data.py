"""Side features for the serving tests: every kind on every side (the declarations of
tests/model/side_data.py), laid over request rows from a seeded RNG, a copy of the tiny data
set whose ``meta.json`` declares them, and small models and checkpoints that read them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from longseq.data.features import FeatureSpec

SPECS: tuple[FeatureSpec, ...] = (
    FeatureSpec("age", "user", "id", cardinality=5),
    FeatureSpec("tags", "user", "multi_hot", cardinality=6, pooling="mean"),
    FeatureSpec("activity", "user", "dense", transform="standardize", mean=3.0, std=2.0),
    FeatureSpec("hour", "context", "id", cardinality=24),
    FeatureSpec("creator", "candidate", "id", cardinality=7),
    FeatureSpec("genres", "candidate", "multi_hot", cardinality=4, pooling="sum"),
    FeatureSpec("duration", "candidate", "dense", transform="log1p", group="content"),
)


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def with_features(table: pa.Table, seed: int = 0) -> pa.Table:
    """``table`` plus a column for every spec of `SPECS` (multi-hot lists of 0-3 ids, some
    empty)."""
    rng = np.random.default_rng(seed)
    n = table.num_rows
    t_len = pa.compute.list_value_length(table.column("tgt_item_id")).to_numpy()
    t_off = np.concatenate(([0], np.cumsum(t_len)))
    n_tgt = int(t_off[-1])

    def bags(count: int, card: int) -> pa.Array:
        lens = rng.integers(0, 4, count)
        off = np.concatenate(([0], np.cumsum(lens)))
        return _lists(off, pa.array(rng.integers(0, card, int(off[-1])), pa.int64()))

    cols = {
        "feat_age": pa.array(rng.integers(0, 5, n), pa.int64()),
        "feat_tags": bags(n, 6),
        "feat_activity": pa.array(rng.uniform(0, 10, n)),
        "feat_hour": pa.array(rng.integers(0, 24, n), pa.int64()),
        "tgt_feat_creator": _lists(t_off, pa.array(rng.integers(0, 7, n_tgt), pa.int64())),
        "tgt_feat_genres": _lists(t_off, bags(n_tgt, 4)),
        "tgt_feat_duration": _lists(t_off, pa.array(rng.uniform(0, 600, n_tgt))),
    }
    for name, col in cols.items():
        table = table.append_column(name, col)
    return table


def feature_data(tiny: Path, out: Path) -> Path:
    """A copy of the tiny data set's ``meta.json`` and ``test`` split with the `SPECS`
    columns, declared in its ``meta.json``."""
    from longseq.data.shards import list_parquet_files

    (out / "test").mkdir(parents=True)
    meta = json.loads((tiny / "meta.json").read_text())
    meta["features"] = [s.to_dict() for s in SPECS]
    (out / "meta.json").write_text(json.dumps(meta))
    for i, f in enumerate(list_parquet_files(tiny / "test")):
        pq.write_table(with_features(pq.read_table(f), seed=i), out / "test" / Path(f).name)
    return out


def feature_model(head: str, data: Path, seed: int = 0):
    """A small STCA (``kv``, recipe) model with ``model.head=head`` reading `SPECS`, its weights
    nudged so that every bias matters (eval mode)."""
    from common import TASKS, model_config, sizes

    from longseq.model.model import LongSeqModel
    from longseq.model.rankmixer_head import RankMixerConfig

    cfg = model_config("stca_kv_padded")
    cfg.head = head
    if head == "rankmixer":
        cfg.rankmixer = RankMixerConfig(dim=16, layers=2, ffn_mult=2.0)
    torch.manual_seed(seed)
    model = LongSeqModel(cfg, sizes(data), TASKS, features=SPECS).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def save_features(model, data: Path, run_dir: Path) -> Path:
    """``model`` as a checkpoint whose ``longseq.json`` records its features (as training
    writes them: `longseq.train.run_meta`)."""
    import dataclasses
    import warnings

    from common import sizes

    from longseq.parallel.checkpoint import save_checkpoint

    meta = {
        "model": dataclasses.asdict(model.cfg),
        "tables": dataclasses.asdict(sizes(data)),
        "tasks": list(model.tasks),
        "data": str(data),
        "features": [f.to_dict() for f in model.features],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return save_checkpoint(run_dir, 1, {"model": model.state_dict()}, meta, {})
