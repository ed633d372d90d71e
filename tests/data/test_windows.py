"""Training-window sampling: Beta lengths with the configured mean, rounding, bounds, modes and
config errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from longseq.data.windows import WindowConfig, sample_windows

DEFAULT = dict(mode="beta", l_min=64, l_max=10_000, l_avg=2_000, alpha=0.25, round_to=8)


@pytest.mark.parametrize(
    "params",
    [
        DEFAULT,  # configs/experiment/default.yaml
        dict(mode="beta", l_min=16, l_max=1024, l_avg=256, alpha=0.25, round_to=8),
        dict(mode="beta", l_min=0, l_max=512, l_avg=100, alpha=2.0, round_to=1),
        dict(mode="beta", l_min=32, l_max=4096, l_avg=3000, alpha=0.5, round_to=64),
    ],
)
def test_beta_mean_bounds_and_rounding(params):
    cfg = WindowConfig(**params)
    cfg.validate("data.window")
    n = 200_000
    w = sample_windows(cfg, np.random.default_rng(0), n)
    assert w.shape == (n,) and w.dtype == np.int64
    r = cfg.round_to
    assert w.min() >= max(r, 1) and w.max() <= cfg.l_max
    assert (w % r == 0).all()
    # the mean is l_avg: within 5 standard errors plus half a rounding step
    tol = 5 * w.std() / np.sqrt(n) + r / 2
    assert abs(w.mean() - cfg.l_avg) < tol, (w.mean(), cfg.l_avg, tol)
    # and the beta parameter is what makes it so
    assert cfg.beta == pytest.approx(cfg.alpha * (cfg.l_max - cfg.l_avg) / (cfg.l_avg - cfg.l_min))


def test_u_shape_when_both_beta_parameters_are_below_one():
    cfg = WindowConfig("beta", 0, l_min=16, l_max=1024, l_avg=512, alpha=0.25, round_to=8)
    assert cfg.beta < 1
    w = sample_windows(cfg, np.random.default_rng(1), 100_000)
    span = cfg.l_max - cfg.l_min
    low = (w < cfg.l_min + 0.1 * span).mean()
    high = (w > cfg.l_max - 0.1 * span).mean()
    mid = ((w > cfg.l_min + 0.45 * span) & (w < cfg.l_min + 0.55 * span)).mean()
    assert low > 3 * mid and high > 3 * mid


@settings(max_examples=60, deadline=None)
@given(
    l_min=st.integers(0, 200),
    gap1=st.integers(1, 500),
    gap2=st.integers(1, 500),
    round_to=st.sampled_from([1, 2, 8, 16, 64]),
    alpha=st.floats(0.05, 5.0),
    seed=st.integers(0, 1000),
)
def test_beta_samples_are_bounded_multiples(l_min, gap1, gap2, round_to, alpha, seed):
    l_avg = l_min + gap1
    l_max = -(-(l_avg + gap2) // round_to) * round_to  # a multiple of round_to
    assume(l_max > l_avg)
    cfg = WindowConfig("beta", 0, l_min, l_max, l_avg, alpha, round_to)
    cfg.validate("data.window")
    w = sample_windows(cfg, np.random.default_rng(seed), 500)
    assert (w >= round_to).all() and (w <= l_max).all()
    assert (w % round_to == 0).all()
    again = sample_windows(cfg, np.random.default_rng(seed), 500)
    assert np.array_equal(w, again)  # a function of the generator state


def test_multiples_of_round_to_when_l_max_is_not_one():
    cfg = WindowConfig("beta", 0, l_min=16, l_max=1000, l_avg=256, alpha=0.25, round_to=64)
    cfg.validate("data.window")  # accepted, so the sampler must honour round_to
    w = sample_windows(cfg, np.random.default_rng(0), 10_000)
    assert (w <= 1000).all()
    assert (w % 64 == 0).all()


def test_full_and_fixed_modes():
    rng = np.random.default_rng(0)
    assert sample_windows(WindowConfig(mode="full"), rng, 5) is None
    w = sample_windows(WindowConfig(mode="fixed", length=37), rng, 4)
    assert w.dtype == np.int64 and w.tolist() == [37] * 4
    assert sample_windows(WindowConfig(mode="fixed", length=3), rng, 0).shape == (0,)
    WindowConfig().validate("data.window")  # the default (full) is valid


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(mode="random"), r"data\.window\.mode"),
        (dict(mode="fixed", length=0), r"data\.window\.length"),
        (dict(mode="fixed", length=-5), r"data\.window\.length"),
        (dict(DEFAULT, alpha=0.0), r"data\.window\.alpha"),
        (dict(DEFAULT, l_avg=64), r"data\.window.*l_min < l_avg"),
        (dict(DEFAULT, l_avg=10_000), r"data\.window.*l_avg < l_max"),
        (dict(DEFAULT, l_min=-1), r"data\.window.*0 <= l_min"),
    ],
)
def test_validation_errors_name_the_key(params, match):
    with pytest.raises(ValueError, match=match):
        WindowConfig(**params).validate("data.window")


def test_validation_is_mode_specific():
    WindowConfig(mode="full", length=0, alpha=-1.0).validate()  # unused keys are not checked
    WindowConfig(mode="fixed", length=5, l_avg=0).validate()
