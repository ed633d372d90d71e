"""The PLI generator: files, determinism, time split, the story's statistics, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy.special import logit

from longseq.config import CONFIG_DIR
from longseq.data.format import REQUEST_SCHEMA, validate_dataset
from longseq.data.manifest import split_layout
from longseq.datasets import oracle, oracle_files
from longseq.datasets.synth import SynthConfig, generate

REPO = Path(__file__).resolve().parents[2]


def make_config(preset: str, out: Path, **over: object) -> SynthConfig:
    """The config the CLI would build for ``preset=<preset> out=<out> key=value...``."""
    overrides = [f"preset={preset}", f"out={out}", *(f"{k}={v}" for k, v in over.items())]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        conf = OmegaConf.to_object(compose("synth", overrides=overrides))
    assert isinstance(conf, SynthConfig)
    conf.progress = False
    return conf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    generate(make_config("tiny", out, seed=1))
    return out


@pytest.fixture(scope="module")
def big_tiny(tmp_path_factory) -> tuple[Path, SynthConfig]:
    """The tiny story with more users, for statistics; gamma != alpha so (s, r) can be decoded."""
    out = tmp_path_factory.mktemp("big_tiny")
    cfg = make_config("tiny", out, num_users=3000, test_fraction=0.5, gamma=1.0, seed=5)
    generate(cfg)
    return out, cfg


def _read(path: Path):
    return pq.read_table(path)


def test_tiny_files_are_valid(tiny):
    cfg = make_config("tiny", tiny)
    assert validate_dataset(tiny / "train") + validate_dataset(tiny / "test") == cfg.num_users
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["num_items"] == cfg.num_categories * cfg.items_per_category == 400
    assert (meta["num_categories"], meta["num_actions"]) == (20, cfg.num_actions)
    assert meta["preset"] is None and meta["config"]["rho"] == cfg.rho
    assert _read(tiny / "train").schema.equals(REQUEST_SCHEMA)
    rep = json.loads((tiny / "oracle.json").read_text())
    assert [w["window"] for w in rep["windows"]] == [50, 100, 256]
    assert rep["num_targets"] == rep["num_requests"] * 8 == meta["num_requests"]["test"] * 8


def test_deterministic_by_seed(tiny, tmp_path):
    generate(make_config("tiny", tmp_path / "a", seed=1))
    generate(make_config("tiny", tmp_path / "b", seed=2))
    files = sorted(p.relative_to(tiny) for p in tiny.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    for f in files:
        if f.name != "meta.json":  # holds the output path
            assert (tiny / f).read_bytes() == (tmp_path / "a" / f).read_bytes(), f
    assert _read(tiny / "train").column("hist_item_id") != _read(tmp_path / "b" / "train").column(
        "hist_item_id"
    )


def test_split_by_request_time(tiny):
    train, test = _read(tiny / "train"), _read(tiny / "test")
    assert test.num_rows == round(0.2 * 128)
    assert max(train.column("request_ts").to_pylist()) <= min(test.column("request_ts").to_pylist())
    rid = np.concatenate(
        [train.column("request_id").to_numpy(), test.column("request_id").to_numpy()]
    )
    assert sorted(rid) == list(range(128))
    uid = np.concatenate([train.column("user_id").to_numpy(), test.column("user_id").to_numpy()])
    assert sorted(uid) == list(range(128))


def test_history_invariants(tiny):
    cfg = make_config("tiny", tiny)
    for row in _read(tiny / "train").to_pylist() + _read(tiny / "test").to_pylist():
        ts = np.array(row["hist_ts"])
        assert (ts < row["request_ts"]).all() and (np.diff(ts) > 0).all()
        assert cfg.hist_len_min <= ts.size <= cfg.hist_len
        items, cats = np.array(row["hist_item_id"]), np.array(row["hist_category_id"])
        assert (items // cfg.items_per_category == cats).all() and (cats < cfg.num_categories).all()
        assert set(row["hist_action"]) <= set(range(cfg.num_actions))
        t_items, t_cats = np.array(row["tgt_item_id"]), np.array(row["tgt_category_id"])
        assert (t_items // cfg.items_per_category == t_cats).all() and len(t_items) == 8
        assert set(row["tgt_click"]) <= {0, 1}
    lens = [len(x) for x in _read(tiny / "train").column("hist_ts").to_pylist()]
    assert len(set(lens)) > 20  # lognormal lengths vary


def test_fixed_length_and_streaming_layout(tmp_path):
    cfg = make_config("tiny", tmp_path, hist_len_dist="fixed", hist_len=40, row_group_size=16,
                      rows_per_file=32, chunk_users=10)  # fmt: skip
    summary = generate(cfg)
    files = sorted((tmp_path / "train").glob("*.parquet"))
    assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [32, 32, 32, 6]
    assert [pq.ParquetFile(files[0]).metadata.row_group(i).num_rows for i in range(2)] == [16, 16]
    assert summary["meta"]["files"]["train"] == [f"train/{f.name}" for f in files]
    lens = {len(x) for x in _read(tmp_path / "train").column("hist_ts").to_pylist()}
    assert lens == {40}
    generate(make_config("tiny", tmp_path))  # rerun into the same folder: no stale parts
    assert sorted(f.name for f in (tmp_path / "train").iterdir()) == [
        "_manifest.json", "part-00000.parquet"
    ]  # fmt: skip
    assert split_layout(tmp_path / "train").source == "manifest"  # the rewritten manifest
    assert validate_dataset(tmp_path) == 128


def _flat(table, name):
    col = table.column(name).combine_chunks()
    return col.offsets.to_numpy(), col.values.to_numpy()


def _decode(out: Path, cfg: SynthConfig, split: str) -> dict[str, np.ndarray]:
    """Flat columns of a split plus the true memberships (s, r) decoded from p_true."""
    table = _read(out / split)
    d = {"h_off": _flat(table, "hist_category_id")[0], "t_off": _flat(table, "tgt_item_id")[0]}
    for name in ("hist_category_id", "tgt_item_id", "tgt_category_id", "tgt_p_true", "tgt_click"):
        d[name] = _flat(table, name)[1]
    d["bias"] = np.load(out / "item_bias.npy")[d["tgt_item_id"]]
    shift = logit(d["tgt_p_true"]) - cfg.b0 - d["bias"]  # alpha*s + gamma*r, alpha=2, gamma=1
    np.testing.assert_allclose(shift, np.rint(shift), atol=1e-9)
    code = np.rint(shift).astype(int)
    assert set(np.unique(code)) <= {0, 1, 2, 3}
    d["s"], d["r"] = code >= 2, code % 2 == 1
    return d


def test_labels_and_events_follow_the_story(big_tiny):
    out, cfg = big_tiny
    d = _decode(out, cfg, "train")
    n, C = d["s"].size, cfg.num_categories
    for got, p in (
        (d["s"], cfg.p_S + (1 - cfg.p_S) * cfg.m / C),
        (d["r"], cfg.p_R + (1 - cfg.p_R) * cfg.R / C),
    ):
        assert abs(got.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    p_true = d["tgt_p_true"]
    assert abs(d["tgt_click"].mean() - p_true.mean()) < 4 * np.sqrt(p_true.mean() / n)
    # per-event rate of the target's category in each part of the history, by membership
    counts = oracle.window_counts(
        d["hist_category_id"], d["h_off"], d["tgt_category_id"], d["t_off"], [10**6], cfg.w_s
    )[10**6]
    p_long, p_recent = oracle.event_rates(oracle.OracleParams.from_mapping(cfg))
    for s in (0, 1):
        for r in (0, 1):
            sel = (d["s"] == s) & (d["r"] == r)
            for hits, events, rate in (
                (counts.n_long, counts.len_long, p_long[s]),
                (counts.n_recent, counts.len_recent, p_recent[s, r]),
            ):
                k, e = hits[sel].sum(), events[sel].sum()
                assert abs(k / e - rate) < 4.5 * np.sqrt(rate * (1 - rate) / e) + 1e-4, (s, r)


def test_far_past_planting_follows_the_story(tmp_path):
    """``far``: no planted event newer than ``far``; the oracle's rates hold in every part."""
    cfg = make_config(
        "tiny",
        tmp_path,
        num_users=2000,
        hist_len_dist="fixed",
        far=64,
        rho=0.2,
        gamma=1.0,
        oracle_windows="[16,64,256]",
    )
    generate(cfg)
    d = _decode(tmp_path, cfg, "train")
    args = (d["hist_category_id"], d["h_off"], d["tgt_category_id"], d["t_off"])
    far_part = oracle.window_counts(*args, [cfg.hist_len], cfg.w_s, cfg.far)[cfg.hist_len]
    near_part = oracle.window_counts(*args, [cfg.far], cfg.w_s, cfg.w_s)[cfg.far]  # w_s..far-1
    p_long, p_recent = oracle.event_rates(oracle.OracleParams.from_mapping(cfg))
    assert p_recent[1, 0] == p_recent[0, 0]  # far > w_s: the recent part says nothing of S_u
    for s in (0, 1):
        for r in (0, 1):
            sel = (d["s"] == s) & (d["r"] == r)
            for hits, events, rate in (
                (far_part.n_long, far_part.len_long, p_long[s]),
                (near_part.n_long, near_part.len_long, 1.0 / cfg.num_categories),
                (far_part.n_recent, far_part.len_recent, p_recent[s, r]),
            ):
                k, e = hits[sel].sum(), events[sel].sum()
                assert abs(k / e - rate) < 4.5 * np.sqrt(rate * (1 - rate) / e) + 1e-4, (s, r)
    rep = json.loads((tmp_path / "oracle.json").read_text())
    auc = {row["window"]: row["auc"] for row in rep["windows"]}
    assert auc[cfg.hist_len] > auc[64] + 0.03  # the far past is where the signal is


def test_valid_split_sits_between_train_and_test_in_time(tmp_path):
    generate(make_config("tiny", tmp_path, valid_fraction=0.25))
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["num_requests"] == {"train": 70, "valid": 32, "test": 26}
    ts = {
        s: _read(tmp_path / s).column("request_ts").to_numpy() for s in ("train", "valid", "test")
    }
    assert ts["train"].max() <= ts["valid"].min() and ts["valid"].max() <= ts["test"].min()
    assert validate_dataset(tmp_path) == 128  # every split


def test_oracle_posterior_matches_generated_memberships(big_tiny):
    """On the generator's own data, P(s | counts) and P(r | counts) match the decoded truth."""
    out, cfg = big_tiny
    d = _decode(out, cfg, "test")
    params = oracle.OracleParams.from_mapping(cfg)
    for w in (cfg.w_s, 64, cfg.hist_len):
        c = oracle.window_counts(
            d["hist_category_id"], d["h_off"], d["tgt_category_id"], d["t_off"], [w], cfg.w_s
        )[w]
        post = oracle.posterior(c, params)
        checked = 0
        for truth, pred in ((d["s"], post[:, 2] + post[:, 3]), (d["r"], post[:, 1] + post[:, 3])):
            # reliability bins: within any function of the counts, E[truth] = mean prediction
            bins = np.digitize(pred, np.linspace(0, 1, 21)[1:-1])
            for b in np.unique(bins):
                sel = bins == b
                if sel.sum() < 100:
                    continue
                p = pred[sel].mean()
                se = np.sqrt(max(p * (1 - p), 1e-4) / sel.sum())
                assert abs(truth[sel].mean() - p) < 4.5 * se, (w, b, sel.sum())
                checked += 1
        assert checked >= 6


def test_oracle_json_matches_files(big_tiny):
    out, _ = big_tiny
    assert validate_dataset(out) == 3000
    saved = json.loads((out / "oracle.json").read_text())
    again = oracle_files.oracle_from_dataset(out)
    assert json.dumps(again, sort_keys=True) == json.dumps(saved, sort_keys=True)


def test_timestamps_with_one_second_gaps(tmp_path):
    cfg = make_config("tiny", tmp_path, mean_gap_s=0.0, num_users=20)
    generate(cfg)
    for row in _read(tmp_path / "train").to_pylist():
        ts = np.array(row["hist_ts"])
        assert ts[-1] == row["request_ts"] - 1 and (np.diff(ts) == 1).all()


def test_presets_compose_and_validate(tmp_path):
    for name in ("tiny", "ci", "default", "farci", "long1k", "long2k"):
        make_config(name, tmp_path).validate()
    d = make_config("default", tmp_path)
    assert (d.num_users, d.hist_len, d.num_categories, d.m, d.rho) == (20000, 10000, 1000, 4, 0.004)
    assert make_config("ci", tmp_path, num_users=100).num_users == 100


@pytest.mark.parametrize(
    ("key", "value"), [("rho", 1.5), ("p_R", 0.9), ("hist_len_dist", "normal"), ("m", 500)]
)
def test_bad_config_names_the_key(key, value):
    cfg = SynthConfig(out="x", **{key: value})
    with pytest.raises(ValueError, match=f"synth config: {key}="):
        cfg.validate()


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "longseq.datasets.synth", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_cli_tiny(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    res = _cli(cwd, "preset=tiny", f"out={tmp_path / 'data'}", "seed=1")
    assert res.returncode == 0, res.stderr
    assert "oracle on test" in res.stdout
    data = tmp_path / "data"
    assert validate_dataset(data) == 128
    meta = json.loads((data / "meta.json").read_text())
    assert meta["preset"] == "tiny" and meta["config"]["seed"] == 1
    rep = json.loads((data / "oracle.json").read_text())
    assert (rep["task"], rep["split"], rep["hist_len_max"]) == ("click", "test", 256)
    assert list(cwd.iterdir()) == []  # no Hydra output folders or logs
    assert sorted(p.name for p in data.iterdir()) == [
        "item_bias.npy", "meta.json", "oracle.json", "test", "train"
    ]  # fmt: skip


def test_cli_bad_value_names_the_key(tmp_path):
    res = _cli(tmp_path, "preset=tiny", f"out={tmp_path}", "rho=1.5")
    assert res.returncode != 0 and "rho" in res.stderr
    res = _cli(tmp_path, "preset=tiny", f"out={tmp_path}", "num_users=many")
    assert res.returncode != 0 and "num_users" in res.stderr
