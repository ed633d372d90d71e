"""Side features for the ``feat_bytes`` and ``feat_step`` suites (pyarrow + numpy only).

`FEATURE_SETS` names the declared feature sets the suites compare: ``none``; ``user`` (the 10
user/context features of `USER_FEATURES`: 5 ``id``, 2 ``multi_hot``, 3 ``dense``); ``user+cand``
(those and the 5 candidate features of `CANDIDATE_FEATURES`: 2 ``id``, 1 ``multi_hot``, 2
``dense``). `with_features` lays their columns (``feat_<name>`` per request, ``tgt_feat_<name>``
per target, `longseq.data.features`) over request rows such as
`longseq.bench.rlb_data.request_table`'s. Every ``multi_hot`` list has a fixed length
(`BAG`), so a feature's ids per request / per target are exact numbers the tests can check.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.data.features import FeatureSpec

#: ids in every list of a ``multi_hot`` feature, by feature name
BAG: dict[str, int] = {"interests": 8, "follows": 8, "genres": 3}

#: 10 per-request features: 7 user, 3 context (5 id, 2 multi_hot, 3 dense)
USER_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("age", "user", "id", cardinality=10),
    FeatureSpec("gender", "user", "id", cardinality=3),
    FeatureSpec("country", "user", "id", cardinality=200),
    FeatureSpec("interests", "user", "multi_hot", cardinality=1000, pooling="mean"),
    FeatureSpec("follows", "user", "multi_hot", cardinality=5000, pooling="sum"),
    FeatureSpec("activity", "user", "dense", transform="log1p"),
    FeatureSpec("tenure", "user", "dense", transform="standardize", mean=300.0, std=200.0),
    FeatureSpec("hour", "context", "id", cardinality=24),
    FeatureSpec("device", "context", "id", cardinality=8),
    FeatureSpec("recency", "context", "dense", transform="log1p"),
)
#: 5 per-target features (2 id, 1 multi_hot, 2 dense)
CANDIDATE_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("creator", "candidate", "id", cardinality=2000),
    FeatureSpec("language", "candidate", "id", cardinality=30),
    FeatureSpec("genres", "candidate", "multi_hot", cardinality=50, pooling="sum"),
    FeatureSpec("price", "candidate", "dense", transform="log1p"),
    FeatureSpec("age_days", "candidate", "dense", transform="log1p"),
)
FEATURE_SETS: dict[str, tuple[FeatureSpec, ...]] = {
    "none": (),
    "user": USER_FEATURES,
    "user+cand": USER_FEATURES + CANDIDATE_FEATURES,
}


def _values(f: FeatureSpec, count: int, rng: np.random.Generator) -> pa.Array:
    """``count`` values of ``f`` (ids, fixed-length id lists, or non-negative floats)."""
    if f.kind == "dense":
        return pa.array(rng.exponential(100.0, count))
    if f.kind == "id":
        return pa.array(rng.integers(0, f.cardinality, count), pa.int64())
    bag = BAG[f.name]
    off = pa.array(np.arange(count + 1, dtype=np.int32) * bag)
    ids = pa.array(rng.integers(0, f.cardinality, count * bag), pa.int64())
    return pa.ListArray.from_arrays(off, ids)


def with_features(table: pa.Table, features: tuple[FeatureSpec, ...], seed: int = 0) -> pa.Table:
    """``table`` (request rows) plus the column of every feature in ``features``."""
    rng = np.random.default_rng([seed, 7])
    t_len = pc.list_value_length(table.column("tgt_item_id")).to_numpy()
    t_off = pa.array(np.concatenate(([0], np.cumsum(t_len))).astype(np.int32))
    for f in features:
        if f.per_request:
            col = _values(f, table.num_rows, rng)
        else:
            col = pa.ListArray.from_arrays(t_off, _values(f, int(t_len.sum()), rng))
        table = table.append_column(f.column, col)
    return table


def ids_per_row(features: tuple[FeatureSpec, ...]) -> int:
    """Sparse ids one row of ``features`` holds (an ``id``: 1, a ``multi_hot``: its `BAG`)."""
    return sum(1 if f.kind == "id" else BAG[f.name] for f in features if f.sparse)
