"""Exact ranking and calibration metrics: AUC, GAUC, log loss, calibration.

Everything here is a pure function of NumPy arrays. AUC is exact with ties handled (Mann-Whitney
U with mid-ranks), which equals ``sklearn.metrics.roc_auc_score``; tests check the parity.

Every metric is a ratio of **exact, additive** sums, so the same numbers come out however the
targets are split over processes (`longseq.eval.dist_metrics` adds the parts of several ranks):

* AUC: ``2U`` (twice the Mann-Whitney statistic, an integer), ``n_pos``, ``n_neg`` (`auc_counts`);
* GAUC: per-group AUCs summed exactly (`GroupAUCSums`; a group must lie whole in one part);
* log loss, calibration: float sums taken exactly (`exact_sum`, a fixed-point Python integer).

Each ratio is then rounded once (Python's correctly rounded ``int / int``), so the result does not
depend on summation order: it is bit-identical for any partition of the targets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: `exact_sum` returns ``n`` with sum = ``n * 2**-FIXED_SHIFT`` (any finite float64 is a multiple
#: of 2**-1074; frexp mantissas carry 53 bits, hence 1074 + 52)
FIXED_SHIFT = 1126
_CHUNK = 1 << 22  # bincount sums of < 2**27 values stay exact in float64 below 2**26 values
_BINS = 2100  # frexp exponents -1073..1024, offset by 1074


def _as_1d(name: str, a: object, dtype: type) -> np.ndarray:
    arr: np.ndarray = np.asarray(a, dtype=dtype).reshape(-1)
    if dtype is np.float64 and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def exact_sum(values: object) -> int:
    """The exact sum of finite float64 ``values`` as a fixed-point integer.

    The sum equals ``n * 2**-FIXED_SHIFT`` for the returned ``n``. Integers add, so the sums of
    the parts of an array add up to the sum of the whole, in any order. Vectorised: each value is
    split into its exponent and two halves of its mantissa, which are summed per exponent
    (`numpy.bincount`, exact for these integer-valued floats).
    """
    x = _as_1d("values", values, np.float64)
    total = 0
    for a in range(0, x.size, _CHUNK):
        m, e = np.frexp(x[a : a + _CHUNK])  # x = m * 2**e, 0.5 <= |m| < 1 (m = 0 for zeros)
        mi = (m * 2.0**53).astype(np.int64)  # exact: |mi| < 2**53
        b = e.astype(np.int64) + 1074
        hi = np.bincount(b, weights=(mi >> 27).astype(np.float64), minlength=_BINS)
        lo = np.bincount(b, weights=(mi & (2**27 - 1)).astype(np.float64), minlength=_BINS)
        for k in np.flatnonzero((hi != 0) | (lo != 0)):
            # value = mi * 2**(e - 53) = mi * 2**(k - 1 - FIXED_SHIFT)
            total += ((int(hi[k]) << 27) + int(lo[k])) << (int(k) - 1)
    return total


def fixed_ratio(num: int, den: int) -> float:
    """``num / den`` of two integers, correctly rounded; NaN when ``den`` is 0."""
    return num / den if den else float("nan")


def sorted_u2(
    s: np.ndarray, pos: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Twice the Mann-Whitney U, positives and negatives of each group of sorted rows.

    ``s`` (scores) and ``pos`` (bool) are sorted by (group, score); ``starts`` holds the index of
    each group's first row (the first is 0). ``2U`` of a group: over its positives, twice the
    group's negatives with a lower score plus those with an equal score; an integer (int64).
    Vectorised over blocks of equal scores, no loop over groups.
    """
    n = s.size
    first = np.empty(n, dtype=bool)  # first row of a block of equal scores within a group
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    first[starts] = True
    bs = np.flatnonzero(first)
    be = np.append(bs[1:], n)
    cn = np.zeros(n + 1, dtype=np.int64)  # cn[i]: negatives among rows [0, i)
    np.cumsum(~pos, out=cn[1:])
    neg_in = cn[be] - cn[bs]
    pos_in = (be - bs) - neg_in
    first_block = np.searchsorted(bs, starts)
    group_neg0 = np.repeat(cn[starts], np.diff(np.append(first_block, bs.size)))
    u2 = np.add.reduceat(pos_in * (2 * (cn[bs] - group_neg0) + neg_in), first_block)
    ends = np.append(starts[1:], n)
    nneg = cn[ends] - cn[starts]
    return u2, (ends - starts) - nneg, nneg


def auc_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[int, int, int]:
    """``(2U, n_pos, n_neg)`` of ``scores`` for binary ``labels`` (positive: label > 0.5)."""
    y = _as_1d("labels", labels, np.float64)
    s = _as_1d("scores", scores, np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in shape")
    if s.size == 0:
        return 0, 0, 0
    order = np.argsort(s)
    u2, npos, nneg = sorted_u2(s[order], y[order] > 0.5, np.zeros(1, dtype=np.int64))
    return int(u2[0]), int(npos[0]), int(nneg[0])


def auc_from_counts(u2: int, n_pos: int, n_neg: int) -> float:
    """AUC from `auc_counts` (NaN when a class is absent), correctly rounded."""
    return fixed_ratio(u2, 2 * n_pos * n_neg)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC of ``scores`` for binary ``labels`` (ties count one half).

    Returns NaN when only one class is present.
    """
    return auc_from_counts(*auc_counts(labels, scores))


@dataclass(frozen=True)
class GroupAUC:
    """Per-group AUC averaged over groups that hold both label classes."""

    gauc: float  #: impression-weighted mean (weight = group's number of targets)
    gauc_unweighted: float  #: plain mean over groups
    groups_used: int
    groups_excluded: int  #: groups with a single label class (not scorable)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class GroupAUCSums:
    """The exact, additive parts of GAUC over a set of whole groups (see `gauc_sums`).

    Parts over disjoint sets of groups add (``+``) to the parts of their union.
    """

    weighted: int = 0  #: `exact_sum` of ``auc_g * targets_g`` over used groups
    targets: int = 0  #: targets of the used groups
    unweighted: int = 0  #: `exact_sum` of ``auc_g`` over used groups
    used: int = 0
    excluded: int = 0

    def __add__(self, other: GroupAUCSums) -> GroupAUCSums:
        return GroupAUCSums(*(a + b for a, b in zip(self.as_ints(), other.as_ints())))

    def as_ints(self) -> list[int]:
        """The fields in order (``GroupAUCSums(*ints)`` rebuilds it)."""
        return [self.weighted, self.targets, self.unweighted, self.used, self.excluded]

    def result(self) -> GroupAUC:
        """The means, each rounded once."""
        w = fixed_ratio(self.weighted, self.targets << FIXED_SHIFT)
        uw = fixed_ratio(self.unweighted, self.used << FIXED_SHIFT)
        return GroupAUC(w, uw, self.used, self.excluded)


def gauc_sums(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> GroupAUCSums:
    """`GroupAUCSums` of the groups in ``groups``; each group's AUC is ``2U / (2 n_pos n_neg)``
    rounded to float64, and weighted by its number of targets."""
    y = _as_1d("labels", labels, np.float64)
    s = _as_1d("scores", scores, np.float64)
    g = np.asarray(groups).reshape(-1)
    if not (y.shape == s.shape == g.shape):
        raise ValueError(f"labels {y.shape}, scores {s.shape}, groups {g.shape} differ in shape")
    if g.size == 0:
        return GroupAUCSums()
    order = np.lexsort((s, g))
    gs = g[order]
    starts = np.flatnonzero(np.concatenate(([True], gs[1:] != gs[:-1])))
    del gs
    u2, npos, nneg = sorted_u2(s[order], y[order] > 0.5, starts)
    ok = (npos > 0) & (nneg > 0)
    v = u2[ok] / (2.0 * npos[ok] * nneg[ok])  # exact operands: one correctly rounded division
    w = (npos + nneg)[ok]
    used = int(ok.sum())
    return GroupAUCSums(exact_sum(v * w), int(w.sum()), exact_sum(v), used, starts.size - used)


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> GroupAUC:
    """GAUC: AUC computed within each group (e.g. user) and averaged.

    Groups whose targets carry a single label class are excluded and counted.
    """
    return gauc_sums(labels, scores, groups).result()


def log_loss_sum(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> int:
    """`exact_sum` of the per-target binary cross-entropies (probabilities clipped)."""
    y = _as_1d("labels", labels, np.float64)
    p = np.clip(_as_1d("probs", probs, np.float64), eps, 1.0 - eps)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probs {p.shape} differ in shape")
    return exact_sum(-(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def log_loss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities (clipped to ``[eps, 1 - eps]``)."""
    n = np.asarray(labels).size
    return fixed_ratio(log_loss_sum(labels, probs, eps), n << FIXED_SHIFT)


def calibration_from_sums(sum_probs: int, sum_labels: int) -> float:
    """Mean prediction over mean label from `exact_sum`s (NaN without positives)."""
    return fixed_ratio(sum_probs, sum_labels)


def calibration(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean prediction divided by mean label (1.0 is calibrated; NaN without positives)."""
    y = _as_1d("labels", labels, np.float64)
    p = _as_1d("probs", probs, np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probs {p.shape} differ in shape")
    return calibration_from_sums(exact_sum(p), exact_sum(y))
