"""The generator's feature block: planted effects, exact marginalisation, files, oracle."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from math import comb
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.special import expit, logit

from longseq.data.feature_checks import feature_problems, feature_schema_problem
from longseq.data.format import REQUEST_SCHEMA, validate_dataset
from longseq.data.meta import DatasetMeta
from longseq.datasets import oracle_features, oracle_files, synth_features
from longseq.datasets.synth import format_summary, generate
from longseq.datasets.synth_features import FeatureTables
from tests.datasets.test_synth import REPO, make_config

FEATS = ("age", "activity", "interests", "hour", "creator", "duration", "audience")


def _gen(out: Path, **over: object) -> dict:
    # gamma != alpha: the membership (s, r) can be decoded from p_true
    cfg = make_config("tiny", out, **{"num_users": 600, "gamma": 1.0, "seed": 3, **over})
    return generate(cfg)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, dict]:
    """The same config and seed with the feature block on and off."""
    on, off = tmp_path_factory.mktemp("feat_on"), tmp_path_factory.mktemp("feat_off")
    summary = _gen(on, features=True, valid_fraction=0.1)
    _gen(off, valid_fraction=0.1)
    return on, off, summary


def _flat(table, name: str) -> np.ndarray:
    return table.column(name).combine_chunks().values.to_numpy(zero_copy_only=False)


def _effects(root: Path, split: str) -> np.ndarray:
    """Each target's integer effect, recomputed from the written feature columns."""
    table = pq.read_table(root / split)
    cfg = DatasetMeta.read(root).extra["config"]
    tags = table.column("feat_interests").to_pylist()
    req = {k: table.column(f"feat_{k}").to_numpy() for k in ("age", "activity", "hour")}
    req["n_good"] = np.array([sum(t < synth_features.GOOD_TAGS for t in x) for x in tags])
    req["n_tags"] = np.array([len(x) for x in tags])
    tgt = {k: _flat(table, f"tgt_feat_{k}") for k in ("creator", "duration", "audience")}
    lens = np.array([len(x) for x in table.column("tgt_item_id").to_pylist()])
    return synth_features.effect_units(FeatureTables.from_config(cfg), req, tgt, lens)


# -- the lattice: exact marginalisation ----------------------------------------------------


def test_marginal_equals_brute_force_enumeration(monkeypatch):
    """On shrunken tables, ``marginal_sigmoid`` equals the literal sum over every outcome of
    the sampling distributions (age x audience x activity x interest set x hour x creator x
    duration), effects from `effect_units`."""
    sf = synth_features
    for name, value in {
        "AGES": 3, "AGE_P": np.array([0.2, 0.5, 0.3]), "AGE_EFF": np.array([-1, 0, 2]),
        "ACT_VALUES": np.arange(5), "ACT_P": np.array([0.4, 0.3, 0.15, 0.1, 0.05]),
        "TAGS": 5, "GOOD_TAGS": 2, "MAX_TAGS": 2,
        "DURATIONS": np.array([10.0, 60.0]), "DUR_P": np.array([0.7, 0.3]),
        "DUR_EFF": np.array([1, -2]),
    }.items():  # fmt: skip
        monkeypatch.setattr(sf, name, value)
    tab = FeatureTables(0.3, np.array([0.6, 0.4]), np.array([3, -1]))
    subsets = [s for k in (1, 2) for s in itertools.combinations(range(5), k)]
    rows, weights = [], []
    for a, au, v, tags, h, c, d in itertools.product(
        range(3), range(3), range(5), subsets, range(24), range(2), range(2)
    ):
        w = sf.AGE_P[a] / 3 * sf.ACT_P[v] * 0.5 / comb(5, len(tags)) * sf.HOUR_P[h]
        rows.append((a, au, v, sum(t < 2 for t in tags), len(tags), h, c, d))
        weights.append(w * tab.creator_p[c] * sf.DUR_P[d])
    r = np.array(rows)
    req = {"age": r[:, 0], "activity": r[:, 2], "n_good": r[:, 3], "n_tags": r[:, 4],
           "hour": r[:, 5]}  # fmt: skip
    tgt = {"audience": r[:, 1], "creator": r[:, 6], "duration": sf.DURATIONS[r[:, 7]]}
    k = sf.effect_units(tab, req, tgt, np.ones(len(r), np.int64))
    weights = np.array(weights)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    lo, pmf = tab.effect_pmf()
    brute = np.bincount(k - lo, weights=weights, minlength=pmf.size)
    np.testing.assert_allclose(brute, pmf, atol=1e-14)
    x = np.linspace(-4, 3, 15)
    want = (weights[None, :] * expit(x[:, None] + tab.step * k[None, :])).sum(axis=1)
    np.testing.assert_allclose(oracle_features.marginal_sigmoid(x, tab), want, atol=1e-13)


def test_draws_follow_the_lattice_pmf():
    """`draw` (independent factors, the real tables): the effect's frequencies match the pmf."""
    tab = FeatureTables.from_config({"seed": 0, "feat_step": 0.2, "feat_num_creators": 100})
    k = synth_features.draw(tab, np.random.default_rng(0), 50_000, 4)["effect"]
    lo, pmf = tab.effect_pmf()
    assert pmf.sum() == pytest.approx(1.0) and k.min() >= lo and k.max() < lo + pmf.size
    freq = np.bincount(k - lo, minlength=pmf.size) / k.size
    se = np.sqrt(pmf * (1 - pmf) / (k.size / 4))  # 4 targets of a request share its features
    assert np.all(np.abs(freq - pmf) < 5 * se + 1e-4)
    x = np.array([-2.0, 0.0])
    emp = expit(x[:, None] + tab.step * k[None, :]).mean(axis=1)
    np.testing.assert_allclose(emp, oracle_features.marginal_sigmoid(x, tab), atol=0.004)


# -- the files ----------------------------------------------------------------------------


def test_p_true_is_sequence_logit_plus_effects(pair):
    """Same seed: the sequence columns are unchanged, logit(p_true) moves by step * effect."""
    on, off, _ = pair
    step = DatasetMeta.read(on).extra["config"]["feat_step"]
    for split in ("train", "valid", "test"):
        t_on, t_off = pq.read_table(on / split), pq.read_table(off / split)
        assert t_off.schema.equals(REQUEST_SCHEMA)
        assert t_on.schema.names == REQUEST_SCHEMA.names + [
            f"{'tgt_' if f in ('creator', 'duration', 'audience') else ''}feat_{f}" for f in FEATS
        ]
        for name in REQUEST_SCHEMA.names:
            if name not in ("tgt_p_true", "tgt_click"):
                assert t_on.column(name).equals(t_off.column(name)), name
        k = _effects(on, split)
        p_on, p_off = _flat(t_on, "tgt_p_true"), _flat(t_off, "tgt_p_true")
        np.testing.assert_allclose(logit(p_on), logit(p_off) + step * k, atol=1e-9)
        # the sequence logit is b0 + b_i + 2 s + 1 r
        bias = np.load(on / "item_bias.npy")[_flat(t_on, "tgt_item_id")]
        code = logit(p_on) - step * k - (-2.0) - bias
        np.testing.assert_allclose(code, np.rint(code), atol=1e-9)
        assert set(np.rint(code).astype(int)) <= {0, 1, 2, 3}


def test_meta_declares_valid_features(pair):
    on, off, _ = pair
    meta = DatasetMeta.read(on)
    assert [f.name for f in meta.features] == list(FEATS)
    assert DatasetMeta.read(off).features == ()
    assert "features" not in json.loads((off / "meta.json").read_text())
    for split in ("train", "valid", "test"):
        table = pq.read_table(on / split)
        assert feature_schema_problem(table.schema, meta.features, split) is None
        assert feature_problems(table, meta.features) == []
    assert validate_dataset(on) == 600


def test_activity_standardisation_from_train(pair):
    on, _, _ = pair
    act = next(f for f in DatasetMeta.read(on).features if f.name == "activity")
    raw = {s: pq.read_table(on / s).column("feat_activity").to_numpy() for s in ("train", "test")}
    x = np.log1p(raw["train"])
    assert act.transform == "log1p_standardize"
    assert (act.mean, act.std) == pytest.approx((x.mean(), x.std()), rel=1e-12)
    assert act.mean != pytest.approx(np.log1p(raw["test"]).mean(), rel=1e-6)  # not the test's
    y = act.transform_values(raw["train"])  # the model input: standardised on train
    assert abs(float(y.mean())) < 1e-5 and float(y.std()) == pytest.approx(1.0, rel=1e-5)


def test_oracle_reports_with_and_without(pair):
    on, off, summary = pair
    rep = json.loads((on / "oracle.json").read_text())
    f = rep["features"]
    assert f["with"]["auc"] == rep["windows"][-1]["auc"]
    assert f["gap_auc"] == f["with"]["auc"] - f["without"]["auc"] > 0.03
    assert f["p_true_without"]["auc"] < rep["p_true"]["auc"]
    assert sum(f["lattice"]["pmf"]) == pytest.approx(1.0)
    assert "features" not in json.loads((off / "oracle.json").read_text())
    again = oracle_files.oracle_from_dataset(on)  # dispatches to oracle_features
    assert json.dumps(again, sort_keys=True) == json.dumps(rep, sort_keys=True)
    assert "features (full window" in format_summary(summary)


def test_seeds_reproducible(pair, tmp_path):
    on, _, _ = pair
    _gen(tmp_path / "a", features=True, valid_fraction=0.1)
    for f in sorted(on.rglob("*.*")):
        if f.name != "meta.json":  # holds the output path
            assert f.read_bytes() == (tmp_path / "a" / f.relative_to(on)).read_bytes(), f
    _gen(tmp_path / "b", features=True, valid_fraction=0.1, seed=4)
    a, b = pq.read_table(on / "train"), pq.read_table(tmp_path / "b" / "train")
    assert not a.column("tgt_feat_creator").equals(b.column("tgt_feat_creator"))


# -- feature block off: the data of before ---------------------------------------------------


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for split in ("train", "test"):
        t = pq.read_table(root / split)
        for name in t.column_names:
            col = t.column(name).combine_chunks()
            a = (col.values if hasattr(col, "values") else col).to_numpy(zero_copy_only=False)
            a = np.round(a, 12) if a.dtype.kind == "f" else a
            h.update(name.encode())
            h.update(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()[:16]


def test_feature_off_tiny_is_unchanged(tmp_path):
    """`tiny`, seed 1: the values and ceilings written before the feature block existed."""
    generate(make_config("tiny", tmp_path, seed=1))
    assert _digest(tmp_path) == "a0e5498b19b3640d"
    rep = json.loads((tmp_path / "oracle.json").read_text())
    assert [round(r["auc"], 10) for r in rep["windows"]] == [0.6643740032, 0.6778807815,
                                                              0.6944278309]  # fmt: skip
    assert round(rep["p_true"]["auc"], 10) == 0.7502990431


# -- the preset and the CLI -----------------------------------------------------------------


def test_features_preset_is_cheap_and_has_a_gap(tmp_path):
    cfg = make_config("features", tmp_path)
    cfg.validate()
    assert cfg.features and cfg.hist_len <= 200 and cfg.num_users <= 24000
    assert (cfg.targets_per_request, cfg.valid_fraction) == (16, 0.1)
    cfg.num_users = 3000
    rep = generate(cfg)["oracle"]
    assert 0.04 < rep["features"]["gap_auc"] < 0.14


def test_validate_cli_passes(pair):
    on, _, _ = pair
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "longseq.datasets.validate", f"path={on}", "progress=false"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
