"""The side features in the pipeline: their statistics on the train split (a pass over the
buckets before the rows are written, so a missing dense value can be written as the train
mean), their columns for a chunk of requests, and their ``stats.json`` block."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa

from longseq.datasets.convert.features import SideFeature
from longseq.datasets.convert.requests import ranges


@dataclasses.dataclass
class _Acc:
    """Train counts of one feature: values, missing, and the mean / M2 of the transformed
    dense values (merged batch by batch, Chan et al.)."""

    rows: int = 0
    missing: int = 0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, f: SideFeature, keys: np.ndarray) -> None:
        self.rows += int(keys.size)
        self.missing += int(f.missing(keys).sum())
        if f.spec.kind != "dense" or keys.size == 0:
            return
        x = f.transformed(keys)
        x = x[~np.isnan(x)]
        if x.size == 0:
            return
        mb, nb = float(x.mean()), int(x.size)
        m2b = float(((x - mb) ** 2).sum())
        n = self.n + nb
        d = mb - self.mean
        self.mean += d * nb / n
        self.m2 += m2b + d * d * self.n * nb / n
        self.n = n


def train_stats(
    feats: list[SideFeature],
    train_chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> dict[str, dict[str, Any]]:
    """Accumulate over the train requests (``(users, request_ts, target raw item ids)`` per
    chunk), then set each dense feature's ``mean`` / ``std`` (of the transformed value; std 1
    when 0 or no value) and ``fill``; return each feature's ``stats.json`` entry."""
    acc = {f.spec.name: _Acc() for f in feats}
    for users, ts, items in train_chunks:
        for f in feats:
            acc[f.spec.name].add(f, {"user": users, "hour": ts, "item": items}[f.by])
    out: dict[str, dict[str, Any]] = {}
    for f in feats:
        a = acc[f.spec.name]
        entry = f.summary()
        entry["train"] = {"values": a.rows, "missing": a.missing,
                          "missing_rate": round(a.missing / a.rows, 6) if a.rows else None}  # fmt: skip
        if f.spec.kind == "dense":
            std = float(np.sqrt(a.m2 / a.n)) if a.n else 0.0
            mean, std = float(a.mean), (std if std > 0 and np.isfinite(std) else 1.0)
            f.spec = dataclasses.replace(f.spec, mean=mean, std=std)
            f.fill = float(np.expm1(mean)) if f.spec.transform.startswith("log1p") else mean
            entry |= {"transform": f.spec.transform, "mean": mean, "std": std,
                      "missing_written_as": f.fill}  # fmt: skip
        out[f.spec.name] = entry
    return out


def feature_columns(
    feats: list[SideFeature],
    users: np.ndarray,
    ts: np.ndarray,
    target_items: np.ndarray,
    t_start: np.ndarray,
    t_end: np.ndarray,
) -> dict[str, pa.Array]:
    """``feat_*`` / ``tgt_feat_*`` columns of requests (``users``, ``ts``) whose targets are
    ``target_items[t_start:t_end]`` (raw item ids)."""
    if not feats:
        return {}
    tidx, toff = ranges(t_start, t_end)
    items = target_items[tidx]
    out: dict[str, pa.Array] = {}
    for f in feats:
        if f.spec.per_request:
            out[f.spec.column] = f.column(users if f.by == "user" else ts)
        else:
            out[f.spec.column] = pa.ListArray.from_arrays(
                pa.array(toff, pa.int32()), f.column(items)
            )
    return out


def feature_fields(feats: list[SideFeature]) -> list[pa.Field]:
    """The schema fields of the feature columns (request-level first, declaration order)."""
    req = [f for f in feats if f.spec.per_request]
    cand = [f for f in feats if not f.spec.per_request]
    out = [pa.field(f.spec.column, f.spec.value_type()) for f in req]
    return out + [pa.field(f.spec.column, pa.list_(f.spec.value_type())) for f in cand]
