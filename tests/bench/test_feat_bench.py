"""The side-feature benchmarks (``feat_bytes``, ``feat_step``) from the session's tiny run of the
real CLI: the JSON structure and the byte counts that are exact. No timing value is asserted."""

from __future__ import annotations

import pytest

from longseq.bench.feat_bytes import render as bytes_md
from longseq.bench.feat_data import (
    BAG,
    CANDIDATE_FEATURES,
    FEATURE_SETS,
    USER_FEATURES,
    ids_per_row,
)
from longseq.bench.feat_step import SHARES
from longseq.bench.feat_step import render as step_md
from longseq.bench.feat_step_worker import PARTS, VARIANTS
from tests.bench.bench_cli import REPS, load

I64, F32 = 8, 4


def _sparse(feats) -> int:
    return sum(f.sparse for f in feats)


def _dense(feats) -> int:
    return sum(not f.sparse for f in feats)


def test_feature_sets():
    assert len(USER_FEATURES) == 10 and len(CANDIDATE_FEATURES) == 5
    for feats in (USER_FEATURES, CANDIDATE_FEATURES):
        assert {f.kind for f in feats} == {"id", "multi_hot", "dense"}
    assert all(f.per_request for f in USER_FEATURES)
    assert not any(f.per_request for f in CANDIDATE_FEATURES)
    assert set(BAG) == {f.name for f in USER_FEATURES + CANDIDATE_FEATURES if f.kind == "multi_hot"}


@pytest.fixture(scope="module")
def feat_bytes(tiny_run):
    return load(tiny_run, "feat_bytes")


def test_feat_bytes_structure(feat_bytes):
    p = feat_bytes
    rows = {(r["length"], r["targets"], r["features"]): r for r in p["results"]}
    cfg = p["config"]
    assert set(rows) == {
        (n, t, f) for n in cfg["lengths"] for t in cfg["targets"] for f in FEATURE_SETS
    }
    for r in rows.values():
        assert r["n_targets"] == r["requests"] * r["targets"]
        assert r["rlb_rows"] == r["requests"] and r["pointwise_rows"] == r["n_targets"]
        for lay in ("rlb", "pointwise"):
            for m in ("stored_plain", "stored_zstd", "stored_zstd_dispersed", "kjt"):
                d = r[lay][m]
                assert set(d) == {"total", "sequence", "user", "candidate"}
                assert d["sequence"] + d["user"] + d["candidate"] <= d["total"] + 1e-9
            assert r[lay]["input"] == r[lay]["kjt"]["total"] + r[lay]["dense"]["total"]
    assert "User-feature KJT bytes per request" in bytes_md(p)


def test_user_features_cost_per_request_in_rlb_per_target_pointwise(feat_bytes):
    """Exact counts: in RLB the user features' KJT and dense bytes are a constant per request
    (per target they fall as 1/T); pointwise pays the same amount per target."""
    per_request = (ids_per_row(USER_FEATURES) + _sparse(USER_FEATURES)) * I64  # ids + lengths
    dense = _dense(USER_FEATURES) * F32
    for r in feat_bytes["results"]:
        t, rl, pw = r["targets"], r["rlb"], r["pointwise"]
        if r["features"] == "none":
            assert rl["kjt"]["user"] == pw["kjt"]["user"] == rl["dense"]["total"] == 0
            continue
        assert rl["kjt"]["user"] * t == pytest.approx(per_request)
        assert pw["kjt"]["user"] == pytest.approx(per_request)
        assert rl["dense"]["user"] * t == pytest.approx(dense)
        assert pw["dense"]["user"] == pytest.approx(dense)
        if t > 1:
            assert rl["input"] < pw["input"]
            assert rl["stored_plain"]["user"] < pw["stored_plain"]["user"]
        else:  # one target per request: the layouts are the same rows
            assert rl["kjt"] == pw["kjt"] and rl["stored_plain"] == pw["stored_plain"]


def test_candidate_features_cost_per_target_in_both_layouts(feat_bytes):
    ids = ids_per_row(CANDIDATE_FEATURES) * I64  # per target, in both layouts
    keys = _sparse(CANDIDATE_FEATURES) * I64  # one length per KJT row and key
    for r in (r for r in feat_bytes["results"] if r["features"] == "user+cand"):
        t = r["targets"]
        assert r["rlb"]["kjt"]["candidate"] == pytest.approx(ids + keys / t)
        assert r["pointwise"]["kjt"]["candidate"] == pytest.approx(ids + keys)


def test_stored_user_columns_do_not_grow_with_targets_in_rlb(feat_bytes):
    """The same requests at every T: the RLB file's user columns are the same bytes."""
    for length in feat_bytes["config"]["lengths"]:
        sel = [r for r in feat_bytes["results"]
               if r["length"] == length and r["features"] == "user"]  # fmt: skip
        absolute = {round(r["rlb"]["stored_plain"]["user"] * r["n_targets"]) for r in sel}
        assert len(absolute) == 1 and absolute.pop() > 0


def test_feat_step_structure(tiny_run):
    p = load(tiny_run, "feat_step")
    steps = {r["variant"]: r for r in p["results"] if r["part"] == "step"}
    assert set(steps) == set(VARIANTS)
    for r in steps.values():
        assert r["median_s"] > 0 and len(r["reps_s"]) == REPS
    assert steps["feat_mlp"]["dense_params"] > steps["none_mlp"]["dense_params"]
    assert steps["none_rankmixer"]["dense_params"] > steps["none_mlp"]["dense_params"]
    assert steps["none_mlp_control"]["dense_params"] == steps["none_mlp"]["dense_params"]
    shares = {r["name"]: r for r in p["results"] if r["part"] == "share"}
    assert set(shares) == set(SHARES)
    for name, (x, ref) in SHARES.items():
        mx, mr = steps[x]["median_s"], steps[ref]["median_s"]
        assert shares[name]["share"] == pytest.approx((mx - mr) / mx)
    fwd = {r["variant"]: r for r in p["results"] if r["part"] == "forward"}
    assert set(fwd) == set(VARIANTS)
    for r in fwd.values():
        assert {f"{k}_ms" for k in (*PARTS, "other", "total")} <= set(r)
        assert r["total_ms"] >= r["lookup_ms"] + r["interaction_ms"] - 1e-6
    collate = next(r for r in p["results"] if r["part"] == "collate")
    assert collate["none_s"] > 0 and collate["features_s"] > 0
    s = p["summary"]
    assert s["share_target"] == 0.15 and isinstance(s["met"], bool)
    assert s["features_rankmixer"] == shares["features_rankmixer"]["share"]
    assert p["config"]["model"]["stca"]["position_bias"] is True  # experiment=long1k's model
    assert "Feature path + RankMixer <= 15% of the step" in step_md(p)
