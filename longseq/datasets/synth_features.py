"""The generator's opt-in feature block: side features with a planted, exactly known effect.

With ``features=true`` every request gets user features ``age`` (id), ``activity`` (dense) and
``interests`` (multi_hot), a context feature ``hour`` (id), and every target the candidate
features ``creator`` (id), ``duration`` (dense) and ``audience`` (id). The click logit is the
sequence story's logit plus ``feat_step * k``, where ``k`` is an **integer** sum of per-factor
effects (the tables below). Every feature is drawn from a finite distribution independently of
everything else (sequence, item, interests), so the total ``k`` of a target has an exact pmf on
the integers, the convolution of the independent factors' pmfs (`effect_pmf`): the ceiling
without features marginalises the effect exactly (`longseq.datasets.oracle_features`). ``age``
and ``audience`` interact (``+CROSS`` when the target's audience is the user's age); they form
one factor whose pmf is enumerated jointly. The story is in ``docs/data-format.md``.

Randomness: per chunk ``default_rng([seed, 3, c0])``, the creator effects ``[seed, 4]``; the
sequence streams are untouched, so a data set without features is the same bytes as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np
import pyarrow as pa

from longseq.data.features import FeatureSpec

AGES = 8
AGE_P = np.array([0.06, 0.14, 0.20, 0.20, 0.15, 0.11, 0.08, 0.06])
AGE_EFF = np.array([-3, -1, 1, 2, 1, 0, -2, -3])
CROSS = 6  #: effect units when the target's ``audience`` equals the user's ``age``
ACT_VALUES = np.arange(51)  #: ``activity``: events last week, 0..50, skewed to small values
ACT_P = 1.0 / (ACT_VALUES + 3.0) ** 1.5
ACT_P = ACT_P / ACT_P.sum()
ACT_EFF = np.array([-4, -2, 0, 1, 2, 3])  #: by bucket min(floor(log2(activity + 1)), 5)
TAGS, GOOD_TAGS, MAX_TAGS = 12, 3, 3  #: ``interests``: 1..3 of 12 tags; tags 0..2 are "good"
HOURS = 24
HOUR_P = 1.0 + 0.6 * np.sin(2 * np.pi * (np.arange(HOURS) - 9) / HOURS)
HOUR_P = HOUR_P / HOUR_P.sum()
HOUR_EFF = np.repeat([-2, 0, 1, 2], 6)  #: night, morning, afternoon, evening
DURATIONS = np.array([5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0])  #: seconds
DUR_P = np.array([0.10, 0.15, 0.20, 0.20, 0.15, 0.10, 0.06, 0.04])
DUR_EFF = np.array([3, 2, 1, 0, 0, -1, -2, -3])
CREATOR_ZIPF, CREATOR_EFF_MAX = 0.8, 6  #: creator popularity; effects uniform in +-6

#: Per-request feature arrays (``interests`` padded with -1) and per-target ones.
REQUEST_KEYS = ("age", "activity", "interests", "hour")
TARGET_KEYS = ("creator", "duration", "audience", "effect")


def interests_effect(n_good: np.ndarray, n_tags: np.ndarray) -> np.ndarray:
    """Effect units of ``interests``: a function of the good share (what mean pooling sees)."""
    return (4 * np.asarray(n_good)) // np.maximum(np.asarray(n_tags), 1) - 1


def activity_bucket(activity: np.ndarray) -> np.ndarray:
    """``min(floor(log2(activity + 1)), 5)`` (exact for the integer values drawn)."""
    a = np.asarray(activity).astype(np.int64)
    return np.minimum(np.floor(np.log2(a + 1) + 1e-9).astype(np.int64), ACT_EFF.size - 1)


@dataclass(frozen=True)
class FeatureTables:
    """The feature block's parameters and per-data-set draws."""

    step: float  #: logit per effect unit (``feat_step``)
    creator_p: np.ndarray
    creator_eff: np.ndarray

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Any) -> FeatureTables:
        """From a ``SynthConfig`` or its ``meta.json`` ``config`` mapping."""
        get = cfg.__getitem__ if isinstance(cfg, Mapping) else (lambda k: getattr(cfg, k))
        n = int(get("feat_num_creators"))
        w = 1.0 / np.arange(1, n + 1) ** CREATOR_ZIPF
        rng = np.random.default_rng([int(get("seed")), 4])
        eff = rng.integers(-CREATOR_EFF_MAX, CREATOR_EFF_MAX + 1, n)
        return cls(float(get("feat_step")), w / w.sum(), eff)

    def effect_pmf(self) -> tuple[int, np.ndarray]:
        """``(lo, pmf)``: ``P(k = lo + j) = pmf[j]`` for the total effect ``k`` of a target."""
        factors = [
            _pmf(np.concatenate([AGE_EFF, AGE_EFF + CROSS]),
                 np.concatenate([AGE_P * (1 - 1 / AGES), AGE_P / AGES])),
            _pmf(ACT_EFF[activity_bucket(ACT_VALUES)], ACT_P),
            _pmf(*_interests_dist()),
            _pmf(HOUR_EFF, HOUR_P),
            _pmf(self.creator_eff, self.creator_p),
            _pmf(DUR_EFF, DUR_P),
        ]  # fmt: skip
        lo, pmf = 0, np.ones(1)
        for f_lo, f_pmf in factors:
            lo, pmf = lo + f_lo, np.convolve(pmf, f_pmf)
        return lo, pmf


def _pmf(values: np.ndarray, probs: np.ndarray) -> tuple[int, np.ndarray]:
    """The pmf of an integer variable taking ``values`` w.p. ``probs``, as ``(lo, pmf)``."""
    v = np.asarray(values, np.int64)
    lo = int(v.min())
    return lo, np.bincount(v - lo, weights=np.asarray(probs, np.float64))


def _interests_dist() -> tuple[np.ndarray, np.ndarray]:
    """Effect of ``interests`` and its probability: 1..3 tags uniform, hypergeometric goods."""
    vals, probs = [], []
    for k in range(1, MAX_TAGS + 1):
        for g in range(min(k, GOOD_TAGS) + 1):
            p = comb(GOOD_TAGS, g) * comb(TAGS - GOOD_TAGS, k - g) / comb(TAGS, k) / MAX_TAGS
            vals.append(int(interests_effect(np.array(g), np.array(k))))
            probs.append(p)
    return np.array(vals), np.array(probs)


def effect_units(
    tab: FeatureTables, req: Mapping[str, np.ndarray], tgt: Mapping[str, np.ndarray],
    tgt_lengths: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The integer effect of every target from the feature values (``req['interests']``:
    padded with -1, or pass ``n_good`` / ``n_tags``)."""
    if "interests" in req:
        tags = np.asarray(req["interests"])
        n_good, n_tags = ((tags >= 0) & (tags < GOOD_TAGS)).sum(1), (tags >= 0).sum(1)
    else:
        n_good, n_tags = req["n_good"], req["n_tags"]
    per_req = (
        AGE_EFF[req["age"]]
        + ACT_EFF[activity_bucket(req["activity"])]
        + interests_effect(n_good, n_tags)
        + HOUR_EFF[req["hour"]]
    )
    rep = np.repeat(np.arange(len(per_req)), tgt_lengths)
    dur = np.searchsorted(DURATIONS, tgt["duration"])
    return (
        per_req[rep]
        + CROSS * (tgt["audience"] == np.asarray(req["age"])[rep])
        + tab.creator_eff[tgt["creator"]]
        + DUR_EFF[dur]
    ).astype(np.int64)


def draw(tab: FeatureTables, rng: np.random.Generator, n: int, T: int) -> dict[str, np.ndarray]:
    """Features of ``n`` requests with ``T`` targets each, and each target's ``effect``."""
    k = rng.integers(1, MAX_TAGS + 1, n)
    order = np.argsort(rng.random((n, TAGS)), axis=1)[:, :MAX_TAGS]
    tags = np.sort(np.where(np.arange(MAX_TAGS) < k[:, None], order, TAGS), axis=1)
    req = {
        "age": rng.choice(AGES, n, p=AGE_P),
        "activity": ACT_VALUES[rng.choice(ACT_VALUES.size, n, p=ACT_P)].astype(np.float64),
        "interests": np.where(tags == TAGS, -1, tags),
        "hour": rng.choice(HOURS, n, p=HOUR_P),
    }
    tgt = {
        "creator": rng.choice(tab.creator_p.size, n * T, p=tab.creator_p),
        "duration": DURATIONS[rng.choice(DURATIONS.size, n * T, p=DUR_P)],
        "audience": rng.integers(0, AGES, n * T),
    }
    tgt["effect"] = effect_units(tab, req, tgt, np.full(n, T))
    return {**req, **tgt}


def select(feat: Mapping[str, np.ndarray], mask: np.ndarray, T: int) -> dict[str, np.ndarray]:
    """The requests of a chunk's features selected by the per-request ``mask``."""
    tg = np.repeat(mask, T)
    return {k: v[mask] if k in REQUEST_KEYS else v[tg] for k, v in feat.items()}


def specs(activity_mean: float, activity_std: float, num_creators: int) -> tuple[FeatureSpec, ...]:
    """The ``meta.json`` declarations (``activity``'s statistics: log1p, train split)."""
    return (
        FeatureSpec("age", "user", "id", cardinality=AGES),
        FeatureSpec("activity", "user", "dense", transform="log1p_standardize",
                    mean=activity_mean, std=activity_std),
        FeatureSpec("interests", "user", "multi_hot", cardinality=TAGS, pooling="mean"),
        FeatureSpec("hour", "context", "id", cardinality=HOURS),
        FeatureSpec("creator", "candidate", "id", cardinality=num_creators),
        FeatureSpec("duration", "candidate", "dense", transform="log1p"),
        FeatureSpec("audience", "candidate", "id", cardinality=AGES),
    )  # fmt: skip


def train_specs(train_activity: np.ndarray | None, num_creators: int) -> tuple[FeatureSpec, ...]:
    """`specs` with ``activity``'s statistics from its train values (none or constant: 0, 1)."""
    x = np.log1p(np.asarray(train_activity if train_activity is not None else [], np.float64))
    std = float(x.std()) if x.size else 0.0
    return specs(float(x.mean()) if x.size else 0.0, std if std > 0 else 1.0, num_creators)


def schema(base: pa.Schema) -> pa.Schema:
    """``base`` with the feature columns appended (in `specs` order)."""
    out = base
    for f in specs(0.0, 1.0, 1):
        typ = f.value_type()
        out = out.append(pa.field(f.column, typ if f.per_request else pa.list_(typ)))
    return out


def columns(feat: Mapping[str, np.ndarray], T: int) -> list[pa.Array]:
    """The feature columns (`schema` order) of selected requests with ``T`` targets each."""
    n = len(feat["age"])
    tags = feat["interests"]
    toff = pa.array(np.arange(n + 1, dtype=np.int32) * T)
    ioff = pa.array(np.concatenate(([0], np.cumsum((tags >= 0).sum(1)))).astype(np.int32))

    def tgt(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(toff, pa.array(values))

    return [
        pa.array(feat["age"], pa.int64()),
        pa.array(feat["activity"], pa.float64()),
        pa.ListArray.from_arrays(ioff, pa.array(tags[tags >= 0], pa.int64())),
        pa.array(feat["hour"], pa.int64()),
        tgt(feat["creator"].astype(np.int64)),
        tgt(feat["duration"].astype(np.float64)),
        tgt(feat["audience"].astype(np.int64)),
    ]
