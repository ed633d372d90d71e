"""Exact ranking and calibration metrics: AUC, GAUC, log loss, calibration.

Everything here is a pure function of NumPy arrays, so the same code scores one process's
predictions or the gathered predictions of many. AUC is exact with ties handled (Mann-Whitney U
with mid-ranks), which equals ``sklearn.metrics.roc_auc_score``; tests check the parity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def _as_1d(name: str, a: object, dtype: type) -> np.ndarray:
    arr = np.asarray(a, dtype=dtype).reshape(-1)
    if dtype is np.float64 and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC of ``scores`` for binary ``labels`` (ties count one half).

    Returns NaN when only one class is present.
    """
    y = _as_1d("labels", labels, np.float64)
    s = _as_1d("scores", scores, np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # mid-ranks for ties: each run of equal scores gets the mean of its 1-based ranks
    boundaries = np.flatnonzero(np.diff(s_sorted)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [s.size]))
    mid = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(mid, ends - starts)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True)
class GroupAUC:
    """Per-group AUC averaged over groups that hold both label classes."""

    gauc: float  #: impression-weighted mean (weight = group's number of targets)
    gauc_unweighted: float  #: plain mean over groups
    groups_used: int
    groups_excluded: int  #: groups with a single label class (not scorable)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> GroupAUC:
    """GAUC: AUC computed within each group (e.g. user) and averaged.

    Groups whose targets carry a single label class are excluded and counted.
    """
    y = _as_1d("labels", labels, np.float64)
    s = _as_1d("scores", scores, np.float64)
    g = np.asarray(groups).reshape(-1)
    if not (y.shape == s.shape == g.shape):
        raise ValueError(f"labels {y.shape}, scores {s.shape}, groups {g.shape} differ in shape")
    if g.size == 0:
        return GroupAUC(float("nan"), float("nan"), 0, 0)
    order = np.argsort(g, kind="mergesort")
    g_sorted = g[order]
    cuts = np.flatnonzero(g_sorted[1:] != g_sorted[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [g.size]))
    vals, weights = [], []
    excluded = 0
    for a, b in zip(starts, ends):
        idx = order[a:b]
        v = auc(y[idx], s[idx])
        if np.isnan(v):
            excluded += 1
            continue
        vals.append(v)
        weights.append(b - a)
    if not vals:
        return GroupAUC(float("nan"), float("nan"), 0, excluded)
    v = np.asarray(vals)
    w = np.asarray(weights, dtype=np.float64)
    return GroupAUC(float((v * w).sum() / w.sum()), float(v.mean()), len(vals), excluded)


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to ``[eps, 1 - eps]``)."""
    y = _as_1d("labels", labels, np.float64)
    p = np.clip(_as_1d("probs", probs, np.float64), eps, 1.0 - eps)
    if y.size == 0:
        return float("nan")
    return float(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)).mean())


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean prediction divided by mean label (1.0 is calibrated; NaN without positives)."""
    y = _as_1d("labels", labels, np.float64)
    p = _as_1d("probs", probs, np.float64)
    if y.size == 0 or y.sum() == 0:
        return float("nan")
    return float(p.mean() / y.mean())
