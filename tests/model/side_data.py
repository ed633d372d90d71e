"""Side features laid over request rows, for the model tests: every kind on every side
(user id / multi-hot / dense, context id, candidate id / multi-hot / dense), drawn from a seeded
RNG, with the `FeatureSpec` declarations that go with them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
