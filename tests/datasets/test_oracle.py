"""The PLI oracle: counts, priors, agreement with brute-force Monte Carlo, ceilings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from longseq.datasets import oracle
from longseq.datasets.oracle import OracleParams, WindowCounts

MC = dict(num_categories=8, m=2, R=2, w_s=6, q=0.5, rho=0.3, p_S=0.3, p_R=0.2)
MC_PARAMS = OracleParams(**MC, b0=-1.0, alpha=2.0, gamma=1.5)
MC_L = 30


def _simulate(n: int, p: OracleParams, L: int, seed: int):
    """An independent, literal simulation of the story (one target per user, b_i = 0).

    With ``p.far > 0`` interest events are planted only at positions ``>= far`` from the newest.
    """
    rng = np.random.default_rng(seed)
    C, rows = p.num_categories, np.arange(n)
    S = np.argsort(rng.random((n, C)), axis=1)[:, : p.m]
    Rs = np.argsort(rng.random((n, C)), axis=1)[:, : p.R]
    hist = np.empty((n, L), np.int64)
    for j in range(L):  # oldest to newest
        c = rng.integers(0, C, n)
        if L - 1 - j >= p.far:
            c = np.where(rng.random(n) < p.rho, S[rows, rng.integers(0, p.m, n)], c)
        if j >= L - p.w_s:  # recent part: uniform over R_u instead, w.p. q
            c = np.where(rng.random(n) < p.q, Rs[rows, rng.integers(0, p.R, n)], c)
        hist[:, j] = c
    u = rng.random(n)
    tgt = rng.integers(0, C, n)
    tgt = np.where(u < p.p_S + p.p_R, Rs[rows, rng.integers(0, p.R, n)], tgt)
    tgt = np.where(u < p.p_S, S[rows, rng.integers(0, p.m, n)], tgt)
    s = (S == tgt[:, None]).any(axis=1)
    r = (Rs == tgt[:, None]).any(axis=1)
    return hist, tgt, s, r, expit(p.b0 + p.alpha * s + p.gamma * r)


@pytest.fixture(scope="module")
def mc():
    return _simulate(200_000, MC_PARAMS, MC_L, seed=11)


def _brute_counts(
    hist: np.ndarray, tgt: np.ndarray, w: int, w_s: int, far: int = 0
) -> WindowCounts:
    L = hist.shape[1]
    vis, rec = min(w, L), min(w, w_s, L)
    start = min(vis, max(w_s, far))  # the long part: visible positions >= max(w_s, far)
    n_vis = (hist[:, L - vis :] == tgt[:, None]).sum(axis=1)
    n_start = (hist[:, L - start :] == tgt[:, None]).sum(axis=1) if start else 0
    n_rec = (hist[:, L - rec :] == tgt[:, None]).sum(axis=1)
    n = hist.shape[0]
    return WindowCounts(n_vis - n_start, np.full(n, vis - start), n_rec, np.full(n, rec))


def _grouped_z(counts: WindowCounts, value: np.ndarray, pred: np.ndarray, binary: bool = False):
    """z-scores of (empirical mean of value) - (prediction) per count configuration.

    For 0/1 values the variance is floored by the Bernoulli variance of the prediction (a group
    of values that are all 1 has no empirical variance but is no evidence against 0.9995).
    """
    key = counts.n_long * 1000 + counts.n_recent
    zs = []
    for k in np.unique(key):
        sel = key == k
        if sel.sum() < 300:
            continue
        v = value[sel]
        p = pred[sel][0]
        se = np.sqrt(max(v.var(ddof=1), p * (1 - p) if binary else 1e-8) / sel.sum())
        assert np.ptp(pred[sel]) < 1e-12  # the oracle is a function of the counts
        zs.append((v.mean() - pred[sel][0]) / se)
    return np.array(zs)


@pytest.mark.parametrize("w", [3, 6, 15, MC_L])
def test_expected_p_matches_monte_carlo(mc, w):
    hist, tgt, _, _, p_true = mc
    counts = _brute_counts(hist, tgt, w, MC_PARAMS.w_s)
    pred = oracle.expected_p(counts, np.zeros(tgt.size), MC_PARAMS)
    z = _grouped_z(counts, p_true, pred)
    assert z.size >= 4
    assert np.abs(z).max() < 4.5, z


def test_membership_posterior_matches_monte_carlo(mc):
    hist, tgt, s, r, _ = mc
    counts = _brute_counts(hist, tgt, MC_L, MC_PARAMS.w_s)
    post = oracle.posterior(counts, MC_PARAMS)
    states = np.array(oracle.STATES)
    p_s = post[:, states[:, 0] == 1].sum(axis=1)
    p_r = post[:, states[:, 1] == 1].sum(axis=1)
    for truth, pred in ((s, p_s), (r, p_r)):
        z = _grouped_z(counts, truth.astype(np.float64), pred, binary=True)
        assert np.abs(z).max() < 4.5, z


FAR_PARAMS = OracleParams(**MC, b0=-1.0, alpha=2.0, gamma=1.5, far=12)


@pytest.fixture(scope="module")
def mc_far():
    return _simulate(200_000, FAR_PARAMS, MC_L, seed=12)


@pytest.mark.parametrize("w", [6, 12, 20, MC_L])
def test_far_past_oracle_matches_monte_carlo(mc_far, w):
    """Far-past planting: exact at every window, and no window <= far beats item identity."""
    hist, tgt, _, _, p_true = mc_far
    counts = _brute_counts(hist, tgt, w, FAR_PARAMS.w_s, FAR_PARAMS.far)
    pred = oracle.expected_p(counts, np.zeros(tgt.size), FAR_PARAMS)
    z = _grouped_z(counts, p_true, pred)
    assert z.size >= 4
    assert np.abs(z).max() < 4.5, z
    if w <= FAR_PARAMS.far:  # no planted event is visible: the long part is empty
        assert (counts.len_long == 0).all()


def test_far_past_oracle_rejects_the_anywhere_oracle(mc_far):
    """The MC check has power: the oracle that ignores ``far`` is visibly off."""
    hist, tgt, _, _, p_true = mc_far
    nofar = OracleParams(**MC, b0=-1.0, alpha=2.0, gamma=1.5)
    counts = _brute_counts(hist, tgt, MC_L, nofar.w_s)
    pred = oracle.expected_p(counts, np.zeros(tgt.size), nofar)
    assert np.abs(_grouped_z(counts, p_true, pred)).max() > 8


@pytest.mark.parametrize("prior", ["uniform", "factorized"])
def test_monte_carlo_rejects_wrong_priors(mc, prior):
    """The MC check has power: the approximate priors are visibly off."""
    hist, tgt, _, _, p_true = mc
    counts = _brute_counts(hist, tgt, MC_L, MC_PARAMS.w_s)
    pred = oracle.expected_p(counts, np.zeros(tgt.size), MC_PARAMS, prior=prior)
    assert np.abs(_grouped_z(counts, p_true, pred)).max() > 8


def test_state_prior():
    for prior in ("target", "factorized", "uniform"):
        assert oracle.state_prior(MC_PARAMS, prior).sum() == pytest.approx(1.0)
    p = oracle.state_prior(MC_PARAMS, "target")
    # P(s=1) = p_S + (1 - p_S - p_R) m/C + p_R m/C
    assert p[2] + p[3] == pytest.approx(0.3 + 0.5 * 2 / 8 + 0.2 * 2 / 8)
    u = oracle.state_prior(MC_PARAMS, "uniform")
    assert u[2] + u[3] == pytest.approx(2 / 8)
    with pytest.raises(ValueError, match="prior"):
        oracle.state_prior(MC_PARAMS, "flat")


@settings(max_examples=60, deadline=None)
@given(
    lens=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    ntg=st.integers(1, 4),
    w_s=st.integers(1, 10),
    far=st.integers(0, 20),
    seed=st.integers(0, 2**31),
)
def test_window_counts_against_brute_force(lens, ntg, w_s, far, seed):
    rng = np.random.default_rng(seed)
    hists = [rng.integers(0, 5, n) for n in lens]
    tgts = [rng.integers(0, 6, ntg) for _ in lens]
    h_off = np.concatenate(([0], np.cumsum(lens)))
    t_off = np.arange(len(lens) + 1) * ntg
    flat_h = np.concatenate(hists).astype(np.int64)
    windows = [1, 3, 7, 50]
    ls = max(w_s, far)
    got = oracle.window_counts(flat_h, h_off, np.concatenate(tgts), t_off, windows, w_s, ls)
    for w in windows:
        i = 0
        for h, ts in zip(hists, tgts):
            vis, rec = h[len(h) - min(w, len(h)) :], h[len(h) - min(w, w_s, len(h)) :]
            near = h[len(h) - min(w, ls, len(h)) :]  # positions < long_start
            for c in ts:
                n_rec = int((rec == c).sum())
                assert got[w].n_recent[i] == n_rec and got[w].len_recent[i] == rec.size
                assert got[w].n_long[i] == int((vis == c).sum()) - int((near == c).sum())
                assert got[w].len_long[i] == vis.size - near.size
                i += 1


def test_window_counts_blocks(monkeypatch):
    """Splitting requests into memory blocks changes nothing."""
    rng = np.random.default_rng(0)
    lens = rng.integers(0, 30, 50)
    h = rng.integers(0, 4, lens.sum())
    h_off = np.concatenate(([0], np.cumsum(lens)))
    t = rng.integers(0, 4, 100)
    t_off = np.arange(51) * 2
    full = oracle.window_counts(h, h_off, t, t_off, [5, 20], 4)
    monkeypatch.setattr(oracle, "_EVENTS_PER_BLOCK", 7)
    small = oracle.window_counts(h, h_off, t, t_off, [5, 20], 4)
    for w in (5, 20):
        for a, b in zip(full[w], small[w]):
            np.testing.assert_array_equal(a, b)


def test_oracle_windows():
    assert oracle.oracle_windows(1000) == [50, 100, 500, 1000]
    assert oracle.oracle_windows(256) == [50, 100, 256]
    assert oracle.oracle_windows(10_000) == [50, 100, 500, 1000, 2000, 5000, 10000]
    assert oracle.oracle_windows(30) == [30]


def test_ceiling_table_uses_exact_metrics():
    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.3
    s1, s2 = rng.random(400), y + rng.random(400)
    groups = np.repeat(np.arange(40), 10)
    rep = oracle.oracle_report(
        y, s2, groups, {100: s1, 50: s2}, num_requests=40, hist_len_max=100, params={"a": 1}
    )
    assert [r["window"] for r in rep["windows"]] == [50, 100]
    assert rep["windows"][1]["auc"] == pytest.approx(roc_auc_score(y, s1))
    assert rep["p_true"]["auc"] == pytest.approx(roc_auc_score(y, s2))
    per_group = [roc_auc_score(y[g * 10 : g * 10 + 10], s1[g * 10 : g * 10 + 10])
                 for g in range(40) if 0 < y[g * 10 : g * 10 + 10].sum() < 10]  # fmt: skip
    assert rep["windows"][1]["gauc"] == pytest.approx(np.mean(per_group))
    assert set(rep) == {"task", "split", "num_requests", "num_targets", "hist_len_max",
                        "windows", "p_true", "params"}  # fmt: skip
    json.dumps(rep)


def test_ci_ceilings_long_beats_short_and_p_true_beats_all(tmp_path):
    """On the ci preset the full window clearly beats w=50, and p_true beats every window."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from longseq.config import CONFIG_DIR
    from longseq.datasets.synth import generate

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = OmegaConf.to_object(compose("synth", overrides=["preset=ci", f"out={tmp_path}"]))
    cfg.progress = False
    rep = generate(cfg)["oracle"]
    aucs = {r["window"]: r["auc"] for r in rep["windows"]}
    assert list(aucs) == [50, 100, 125, 250]
    assert aucs[250] >= aucs[50] + 0.03
    assert all(a <= b + 0.005 for a, b in zip(list(aucs.values()), list(aucs.values())[1:]))
    assert all(rep["p_true"]["auc"] > a for a in aucs.values())
    assert all(rep["p_true"]["gauc"] > r["gauc"] for r in rep["windows"])
