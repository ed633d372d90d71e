"""Side features on the serving path: raw per-request values -> batch parts, and the user
state's feature part put back on a cached state.

A `Scorer`'s cache holds the tower's state of a history (`CachedUser`); the user/context
features are recomputed for every request (one embedding row or a pooled list per feature, and
the head's small user projection) and put on the cached state by `with_user_features`. So a
cached state never serves another request's user or context features, and a context feature
that changes every request (hour, device) does not make every request a cache miss
(docs/serving.md, "Side features").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from longseq.data.feature_arrays import FeatureArrays, feature_arrays
from longseq.data.features import FeatureSpec
from longseq.model.interaction import UserSide
from longseq.model.model import LongSeqModel


@dataclass
class CachedUser:
    """What the `Scorer`'s cache keeps of a request: its `UserSide` (with the features of the
    request that computed it) and, for a RankMixer head with a history token and user/context
    features, the history mean ``[1, d]`` its user tokens are recomputed from."""

    user: UserSide
    history_mean: torch.Tensor | None = None

    def nbytes(self) -> int:
        """Bytes of its tensors."""
        extra = 0 if self.history_mean is None else self.history_mean.untyped_storage().nbytes()
        return self.user.nbytes() + extra


def needs_history_mean(model: LongSeqModel) -> bool:
    """Whether a cached state must keep the history mean: the RankMixer head's user tokens mix
    the history token with user/context features, which change between requests."""
    inter = model.interaction
    return bool(inter.side.request_feats) and inter.head_needs_history_mean


def with_user_features(
    model: LongSeqModel, cached: CachedUser, feats: dict[str, torch.Tensor]
) -> UserSide:
    """The cached state with the user/context feature part of a request (``feats``: its
    `user_features`, ``{group: [1, w]}``): the MLP head's feature vector, or the RankMixer
    head's user tokens (as `SequenceInteraction.encode_users` computes them)."""
    if not model.interaction.side.request_feats:
        return cached.user
    tokens, vec = model.interaction.head_user_inputs(cached.history_mean, feats)
    return replace(cached.user, head_tokens=tokens, features=vec)


def row_request_kjt(kjt: KeyedJaggedTensor, row: int, keys: Sequence[str]) -> KeyedJaggedTensor:
    """A one-request KJT with every key of ``kjt``: the request ``row``'s values of ``keys``
    (its user/context features), every other key empty (what a lookup of them needs)."""
    values, lengths = [], []
    wanted = set(keys)
    for key in kjt.keys():
        if key not in wanted:
            lengths.append(0)
            continue
        jt = kjt[key]
        off = jt.offsets()
        values.append(jt.values()[int(off[row]) : int(off[row + 1])])
        lengths.append(int(values[-1].numel()))
    vals = torch.cat(values) if values else torch.zeros(0, dtype=torch.int64)
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(kjt.keys()), values=vals, lengths=torch.tensor(lengths, dtype=torch.int64)
    )


def _arrow(spec: FeatureSpec, value: Any, k: int) -> pa.Array:
    """One request's raw value of ``spec`` as its one-row column (a candidate feature: a list
    of ``k`` values)."""
    inner = spec.value_type()
    if spec.per_request:
        return pa.array([value], type=inner)
    if len(value) != k:
        raise ValueError(f"feature {spec.name!r}: {len(value)} values for {k} candidates")
    return pa.array([list(value)], type=pa.list_(inner))


def raw_feature_arrays(
    specs: Sequence[FeatureSpec], values: Mapping[str, Any], k: int, request: bool = True
) -> FeatureArrays:
    """The `FeatureArrays` of one request from raw values by feature name, as in its Parquet
    row: an ``id`` an int, a ``multi_hot`` a list of ints, a ``dense`` the raw float
    (transformed here); a candidate feature a list of ``k`` such values. ``request=False``:
    only the candidate features are read (the user/context keys left empty)."""
    known = {s.name for s in specs}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown feature {unknown[0]!r}: the model reads {sorted(known)}")
    cols, used = {}, []
    for s in specs:
        if s.per_request and not request:
            continue
        if s.name not in values:
            if s.per_request or k:
                raise ValueError(f"feature {s.name!r} ({s.side}, {s.kind}) is missing")
            values = {**values, s.name: []}  # no candidates: an empty list
        cols[s.column] = _arrow(s, values[s.name], k)
        used.append(s)
    table = pa.table(cols) if cols else pa.table({"_": pa.array([0])})
    got = feature_arrays(table, used, np.zeros(1, np.int64), np.array([k], np.int64))
    sparse = {}
    for s in specs:  # every sparse key, in the model's order (collate's)
        if s.sparse:
            sparse[s.key] = got.sparse.get(s.key, (np.zeros(0, np.int64), np.zeros(1, np.int64)))
    return replace(got, sparse=sparse)
