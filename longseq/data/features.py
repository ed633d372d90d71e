"""Declared side features: user, context and candidate features beside the sequence.

A data set declares its features in ``meta.json`` under ``features`` (a list; see
``docs/data-format.md``, "Features"); nothing is guessed from column names. Each entry is a
`FeatureSpec`:

* ``side``: ``user`` or ``context`` (one value per request, stored once per request like the
  history: request-level batching in storage) or ``candidate`` (one value per target, parallel
  to ``tgt_item_id``);
* ``kind``: ``id`` (one int64 in ``[0, cardinality)``), ``multi_hot`` (a list of such ids,
  pooled by ``pooling``: ``mean`` or ``sum``; an empty list pools to zeros) or ``dense`` (one
  float, mapped by ``transform``: ``none``, ``log1p``, ``standardize`` ``(x - mean) / std`` or
  ``log1p_standardize``; ``mean`` / ``std`` are computed by the writer on the train split).

Columns: ``feat_<name>`` for a request-level feature (``int64``, ``list<int64>``, ``double`` or
``float`` by kind) and ``tgt_feat_<name>`` for a candidate feature (the same types inside one
more list level). The checks of the columns are `longseq.data.feature_checks`. Plain data code,
importable without pyarrow (the model reads the declarations; serving loads no Parquet stack).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pyarrow is imported where types are checked: the model never loads it
    import pyarrow as pa

SIDES: tuple[str, ...] = ("user", "context", "candidate")
KINDS: tuple[str, ...] = ("id", "multi_hot", "dense")
POOLINGS: tuple[str, ...] = ("mean", "sum")
TRANSFORMS: tuple[str, ...] = ("none", "log1p", "standardize", "log1p_standardize")
#: Prefix of a request-level feature column / of a candidate feature column.
REQUEST_PREFIX, CANDIDATE_PREFIX = "feat_", "tgt_feat_"

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_KEYS = ("name", "side", "kind", "cardinality", "pooling", "transform", "mean", "std", "group")


@dataclass(frozen=True)
class FeatureSpec:
    """One declared feature (an entry of ``meta.json``'s ``features``).

    Attributes:
        name: lower-case identifier; the column is ``feat_<name>`` / ``tgt_feat_<name>``.
        side: ``user``, ``context`` (per request) or ``candidate`` (per target).
        kind: ``id``, ``multi_hot`` or ``dense``.
        cardinality: rows of the feature's embedding table (``id`` / ``multi_hot``): every id
            is in ``[0, cardinality)`` (a converter hashes larger vocabularies into it).
        pooling: ``mean`` or ``sum`` of a ``multi_hot`` list's embeddings.
        transform: of a ``dense`` value: ``none``, ``log1p``, ``standardize`` or
            ``log1p_standardize`` (standardisation by ``mean`` / ``std``, after ``log1p``).
        mean / std: the standardisation statistics (train split).
        group: the RankMixer token the feature goes into (features of one group share a
            token); empty: its side.
    """

    name: str
    side: str
    kind: str
    cardinality: int = 0
    pooling: str = "mean"
    transform: str = "none"
    mean: float = 0.0
    std: float = 1.0
    group: str = ""

    def __post_init__(self) -> None:
        self.check()

    def check(self, where: str = "meta.json features") -> None:
        """Raise ``ValueError`` naming ``where``, the feature and the key."""
        at = f"{where}[{self.name!r}]"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"{where}: feature name {self.name!r} must match [a-z][a-z0-9_]*")
        for key, allowed in (("side", SIDES), ("kind", KINDS), ("pooling", POOLINGS),
                             ("transform", TRANSFORMS)):  # fmt: skip
            if getattr(self, key) not in allowed:
                raise ValueError(f"{at}: {key}={getattr(self, key)!r}, choose one of {allowed}")
        if self.sparse:
            if not isinstance(self.cardinality, int) or self.cardinality < 1:
                raise ValueError(f"{at}: cardinality must be an integer >= 1 for kind={self.kind}")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"{at}: mean must be finite and std finite and > 0")
        if self.group and not _NAME.match(self.group):
            raise ValueError(f"{at}: group {self.group!r} must match [a-z][a-z0-9_]*")

    @property
    def per_request(self) -> bool:
        """One value per request (user or context side)."""
        return self.side != "candidate"

    @property
    def sparse(self) -> bool:
        """An id feature (``id`` or ``multi_hot``): looked up in an embedding table."""
        return self.kind != "dense"

    @property
    def column(self) -> str:
        """The Parquet column: ``feat_<name>`` or ``tgt_feat_<name>``."""
        return (REQUEST_PREFIX if self.per_request else CANDIDATE_PREFIX) + self.name

    @property
    def key(self) -> str:
        """The batch key (KJT key of a sparse feature; the column name)."""
        return self.column

    @property
    def token_group(self) -> str:
        """The RankMixer token group: ``group``, else the side."""
        return self.group or self.side

    def value_type(self) -> pa.DataType:
        """The Arrow type of one value (``dense``: ``double``; ``float`` is accepted too)."""
        import pyarrow as pa

        return {"id": pa.int64(), "multi_hot": pa.list_(pa.int64()), "dense": pa.float64()}[
            self.kind
        ]

    def accepts(self, typ: pa.DataType) -> bool:
        """Whether ``typ`` is a valid type of this feature's column."""
        import pyarrow as pa

        if not self.per_request:
            if not pa.types.is_list(typ):
                return False
            typ = typ.value_type
        if self.kind == "dense":
            return typ in (pa.float64(), pa.float32())
        return typ == self.value_type()

    def expected_type(self) -> str:
        """The column type, in words (for errors)."""
        inner = str(self.value_type()) + (" (or float)" if self.kind == "dense" else "")
        return inner if self.per_request else f"list<{inner}>"

    def transform_values(self, x: np.ndarray) -> np.ndarray:
        """The model input of raw ``dense`` values (float32)."""
        y = np.asarray(x, dtype=np.float64)
        if self.transform in ("log1p", "log1p_standardize"):
            y = np.log1p(np.maximum(y, 0.0))
        if self.transform in ("standardize", "log1p_standardize"):
            y = (y - self.mean) / self.std
        return y.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The ``meta.json`` entry (defaults left out)."""
        out: dict[str, Any] = {"name": self.name, "side": self.side, "kind": self.kind}
        if self.sparse:
            out["cardinality"] = self.cardinality
        if self.kind == "multi_hot":
            out["pooling"] = self.pooling
        if self.kind == "dense":
            out["transform"] = self.transform
            if "standardize" in self.transform:
                out.update(mean=self.mean, std=self.std)
        if self.group:
            out["group"] = self.group
        return out

    @classmethod
    def from_dict(cls, doc: Any, where: str = "meta.json features") -> FeatureSpec:
        """A spec from its ``meta.json`` entry; errors name ``where`` and the key."""
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: each feature must be an object, got {doc!r}")
        unknown = sorted(set(doc) - set(_KEYS))
        if unknown:
            raise ValueError(f"{where}[{doc.get('name')!r}]: unknown key {unknown[0]!r} ({_KEYS})")
        for k in ("name", "side", "kind"):
            if k not in doc:
                raise ValueError(f"{where}: a feature lacks key {k!r}")
        if "cardinality" in doc and (
            not isinstance(doc["cardinality"], int) or isinstance(doc["cardinality"], bool)
        ):
            raise ValueError(f"{where}[{doc['name']!r}]: cardinality must be an integer")
        for k in ("mean", "std"):
            if k in doc and not isinstance(doc[k], int | float):
                raise ValueError(f"{where}[{doc['name']!r}]: {k} must be a number")
        kw = {k: doc[k] for k in _KEYS if k in doc}
        for k in ("mean", "std"):
            if k in kw:
                kw[k] = float(kw[k])
        spec = cls.__new__(cls)
        for k, v in {**_defaults(), **kw}.items():
            object.__setattr__(spec, k, v)
        spec.check(where)
        return spec


def _defaults() -> dict[str, Any]:
    return {"cardinality": 0, "pooling": "mean", "transform": "none", "mean": 0.0, "std": 1.0,
            "group": ""}  # fmt: skip


def parse_features(doc: Any, where: str = "meta.json") -> tuple[FeatureSpec, ...]:
    """``meta.json``'s ``features`` list -> specs (names unique); errors name ``where``."""
    if doc is None:
        return ()
    if not isinstance(doc, list):
        raise ValueError(f"{where}: key 'features' must be a list of feature objects")
    specs = tuple(FeatureSpec.from_dict(d, f"{where} features") for d in doc)
    names = [s.name for s in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ValueError(f"{where} features: name {dup!r} declared twice")
    return specs


def request_features(features: Sequence[FeatureSpec]) -> list[FeatureSpec]:
    """The per-request (user and context) features, in declaration order."""
    return [f for f in features if f.per_request]


def candidate_features(features: Sequence[FeatureSpec]) -> list[FeatureSpec]:
    """The per-target (candidate) features, in declaration order."""
    return [f for f in features if not f.per_request]
