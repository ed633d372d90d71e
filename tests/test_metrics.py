"""Metrics against scikit-learn and brute force: AUC with ties, GAUC, log loss, calibration."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from longseq.metrics import (
    FIXED_SHIFT,
    GroupAUC,
    GroupAUCSums,
    auc,
    auc_counts,
    calibration,
    exact_sum,
    fixed_ratio,
    gauc,
    gauc_sums,
    log_loss,
)

HYP = settings(max_examples=80, deadline=None)

# scores from a handful of values: many ties, within and across classes
tied_scores = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5000001, 0.9, 1.0, -3.0])
samples = st.lists(st.tuples(st.integers(0, 1), tied_scores), min_size=1, max_size=60)


@HYP
@given(samples)
def test_auc_equals_sklearn_with_ties(pairs):
    y = np.array([p[0] for p in pairs], dtype=np.float64)
    s = np.array([p[1] for p in pairs])
    got = auc(y, s)
    if 0 < y.sum() < y.size:
        assert got == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert auc(y, -s) == pytest.approx(1.0 - got, abs=1e-12)  # reversing the ranking
    else:
        assert math.isnan(got)


def test_auc_examples():
    assert auc([0, 1], [0.1, 0.9]) == 1.0
    assert auc([0, 1], [0.9, 0.1]) == 0.0
    assert auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied
    assert auc(np.array([[1, 1], [0, 0]]), np.array([[0.2, 0.7], [0.6, 0.1]])) == 0.75  # flat
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(auc([0, 0], [0.1, 0.2]))
    assert math.isnan(auc([], []))


def test_auc_input_errors():
    with pytest.raises(ValueError, match="shape"):
        auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="scores contains NaN"):
        auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="labels contains NaN or inf"):
        auc([0, float("inf")], [0.1, 0.2])


def _brute_gauc(y: np.ndarray, s: np.ndarray, g: np.ndarray) -> tuple[float, float, int, int]:
    vals, weights, excluded = [], [], 0
    for grp in sorted(set(g.tolist())):
        m = g == grp
        if len(set(y[m].tolist())) < 2:
            excluded += 1
            continue
        vals.append(roc_auc_score(y[m], s[m]))
        weights.append(m.sum())
    if not vals:
        return math.nan, math.nan, 0, excluded
    return float(np.average(vals, weights=weights)), float(np.mean(vals)), len(vals), excluded


@HYP
@given(
    st.lists(st.tuples(st.integers(0, 1), tied_scores, st.integers(0, 6)), min_size=1, max_size=80)
)
def test_gauc_equals_per_group_sklearn(rows):
    y = np.array([r[0] for r in rows], dtype=np.float64)
    s = np.array([r[1] for r in rows])
    g = np.array([r[2] * 1000 - 7 for r in rows], dtype=np.int64)  # unsorted, negative ids
    got = gauc(y, s, g)
    w, uw, used, excluded = _brute_gauc(y, s, g)
    assert (got.groups_used, got.groups_excluded) == (used, excluded)
    assert got.groups_used + got.groups_excluded == len(set(g.tolist()))
    if used:
        assert got.gauc == pytest.approx(w, abs=1e-12)
        assert got.gauc_unweighted == pytest.approx(uw, abs=1e-12)
    else:
        assert math.isnan(got.gauc) and math.isnan(got.gauc_unweighted)


def test_gauc_example_weights_and_exclusions():
    y = np.array([1, 0, 0, 1, 0, 1, 1, 1, 0])
    s = np.array([0.9, 0.1, 0.5, 0.4, 0.3, 0.2, 0.5, 0.6, 0.7])
    g = np.array(["u1", "u1", "u2", "u2", "u2", "u3", "u3", "u4", "u4"])
    got = gauc(y, s, g)  # u1: 1.0 (2 targets), u2: 0.5 (3), u3: excluded, u4: 0.0 (2)
    assert got == GroupAUC(gauc=(2 * 1.0 + 3 * 0.5 + 2 * 0.0) / 7, gauc_unweighted=0.5,
                           groups_used=3, groups_excluded=1)  # fmt: skip
    assert got.as_dict() == {
        "gauc": got.gauc,
        "gauc_unweighted": 0.5,
        "groups_used": 3,
        "groups_excluded": 1,
    }
    with pytest.raises(ValueError, match="differ in shape"):
        gauc(y, s, g[:-1])


def test_gauc_of_nothing_has_no_groups():
    got = gauc(np.array([]), np.array([]), np.array([], dtype=np.int64))
    assert (got.groups_used, got.groups_excluded) == (0, 0)


@HYP
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.floats(0.001, 0.999, allow_nan=False)),
        min_size=1,
        max_size=50,
    )
)
def test_log_loss_equals_sklearn(pairs):
    y = np.array([p[0] for p in pairs], dtype=np.float64)
    p = np.array([p[1] for p in pairs])
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p, labels=[0, 1]), rel=1e-10)


def test_log_loss_clips_and_handles_empty():
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-7), rel=1e-6)
    assert math.isfinite(log_loss([1], [0.0], eps=1e-15))
    assert math.isnan(log_loss([], []))
    assert log_loss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))


def test_calibration():
    assert calibration([1, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(2.0)
    assert calibration([1, 1, 0, 0], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(1.0)
    assert calibration([1, 0], [0.1, 0.1]) == pytest.approx(0.2)
    assert math.isnan(calibration([0, 0], [0.3, 0.4]))
    assert math.isnan(calibration([], []))
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.6, 200_000)
    y = (rng.random(p.size) < p).astype(np.float64)  # calibrated by construction
    assert calibration(y, p) == pytest.approx(1.0, abs=0.01)
    assert calibration(y, 2 * p) == pytest.approx(2.0, abs=0.02)


finite = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)


@HYP
@given(st.lists(finite, max_size=40), st.integers(0, 40))
def test_exact_sum_is_exact_and_additive(xs, cut):
    got = exact_sum(np.array(xs, dtype=np.float64))
    assert Fraction(got, 2**FIXED_SHIFT) == sum((Fraction(x) for x in xs), Fraction(0))
    assert exact_sum(xs[:cut]) + exact_sum(xs[cut:]) == got  # parts add up to the whole
    if xs:  # rounded once: Python's correctly rounded int / int
        assert fixed_ratio(got, len(xs) << FIXED_SHIFT) == float(
            sum((Fraction(x) for x in xs), Fraction(0)) / len(xs)
        )


def test_exact_sum_of_large_arrays_and_cancellation():
    rng = np.random.default_rng(0)
    x = rng.random(3 * 2**21) * 1e-3
    assert exact_sum(x) == sum(exact_sum(x[i::7]) for i in range(7))
    assert exact_sum([1e300, 1.0, -1e300]) == 1 << FIXED_SHIFT
    assert exact_sum([]) == 0 and math.isnan(fixed_ratio(0, 0))


@HYP
@given(samples)
def test_auc_counts_are_integers_of_the_mann_whitney_statistic(pairs):
    y = np.array([p[0] for p in pairs], dtype=np.float64)
    s = np.array([p[1] for p in pairs])
    u2, n_pos, n_neg = auc_counts(y, s)
    brute = sum(
        2 * (a > b) + (a == b) for a in s[y == 1] for b in s[y == 0]
    )  # pairs (positive, negative)
    assert (u2, n_pos, n_neg) == (brute, int(y.sum()), int((y == 0).sum()))


@HYP
@given(
    st.lists(st.tuples(st.integers(0, 1), tied_scores, st.integers(0, 9)), min_size=1, max_size=80),
    st.integers(2, 4),
)
def test_gauc_sums_of_disjoint_groups_add_to_the_whole(rows, parts):
    y = np.array([r[0] for r in rows], dtype=np.float64)
    s = np.array([r[1] for r in rows])
    g = np.array([r[2] for r in rows], dtype=np.int64)
    total = GroupAUCSums()
    for k in range(parts):  # groups dealt over parts, in scrambled order
        m = g * 7 % parts == k
        total = total + gauc_sums(y[m][::-1], s[m][::-1], g[m][::-1])
    whole = gauc_sums(y, s, g)
    assert total == whole
    assert repr(total.result()) == repr(gauc(y, s, g))  # bit-identical, NaN included
