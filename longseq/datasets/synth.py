"""Planted-long-range-interest (PLI) generator: request-level Parquet with a known answer.

The generative story is in ``docs/data-format.md``. One request per user; users are generated in chunks of
``chunk_users`` and streamed to Parquet, so memory stays bounded by a chunk and a row group.
Everything is a function of ``seed`` (and ``chunk_users``): same config, same bytes.

    python -m longseq.datasets.synth preset=<tiny|ci|default> out=<dir> seed=<n> [key=value ...]

writes ``<out>/train/part-*.parquet``, ``<out>/test/part-*.parquet``, ``<out>/meta.json``
(vocabulary sizes and the full config), ``<out>/item_bias.npy`` (``b_i`` per item id) and
``<out>/oracle.json`` (ceilings on the test split, see :mod:`longseq.datasets.oracle`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from omegaconf import MISSING
from scipy.special import expit

from longseq.data.format import REQUEST_SCHEMA
from longseq.data.manifest import MANIFEST_NAME
from longseq.data.meta import FORMAT, DatasetMeta
from longseq.data.writer import SplitWriter
from longseq.datasets import oracle, oracle_features, synth_features
from longseq.datasets.synth_features import FeatureTables


@dataclass
class SynthConfig:
    """All generator parameters (names follow the generator's description in docs/data-format.md)."""

    out: str = MISSING  #: output folder
    seed: int = 0
    num_users: int = 3000  #: one request per user
    targets_per_request: int = 16  #: T
    hist_len: int = 1000  #: L (fixed) or the cap L_max (lognormal)
    hist_len_dist: str = "fixed"  #: "fixed" | "lognormal"
    hist_len_median: int = 300  #: lognormal median (before capping)
    hist_len_sigma: float = 1.0  #: lognormal sigma
    hist_len_min: int = 1  #: lognormal lower clip
    num_categories: int = 100  #: C (the written category ids; coarse groups when k > 1)
    items_per_category: int = 50  #: item_id = topic * items_per_category + rank
    #: k hidden topics per written category: the story runs on C * k topics, the written
    #: category is topic // k (only item ids reveal the topic); 1: category = topic
    topics_per_category: int = 1
    zipf: float = 1.0  #: Zipf exponent of item ranks within a category
    m: int = 2  #: long-term interests |S_u|
    R: int = 2  #: short-term interests |R_u|
    w_s: int = 50  #: size of the recent part of the history
    q: float = 0.5  #: P(recent event is from R_u)
    rho: float = 0.015  #: P(event is a planted interest event)
    far: int = 0  #: plant interest events only at positions >= far from the newest (0: anywhere)
    p_S: float = 0.3  #: P(target category from S_u)
    p_R: float = 0.2  #: P(target category from R_u)
    b0: float = -2.0
    alpha: float = 2.0
    gamma: float = 2.0
    sigma_i: float = 0.7  #: std of the item bias b_i
    num_actions: int = 4  #: action types (pure noise)
    ts_start: int = 1_700_000_000  #: request times uniform in [ts_start, ts_start + ts_span)
    ts_span: int = 30 * 86400
    mean_gap_s: float = 600.0  #: mean seconds between events (1 + exponential)
    test_fraction: float = 0.2  #: latest requests (by request_ts) go to test
    valid_fraction: float = 0.0  #: the requests just before test go to valid (0: no valid split)
    chunk_users: int = 256  #: users generated at a time (part of the seed: changes values)
    rows_per_file: int = 100_000
    row_group_size: int = 256
    compression: str = "zstd"
    features: bool = False  #: the side-feature block (synth_features; off: data as before)
    feat_step: float = 0.2  #: logit per feature effect unit
    feat_num_creators: int = 100  #: cardinality of the candidate feature ``creator``
    oracle_windows: list[int] = field(default_factory=lambda: list(oracle.DEFAULT_WINDOWS))
    progress: bool = True  #: tqdm progress bar on stderr

    @property
    def num_topics(self) -> int:
        """Hidden topics the generative story (and the oracle) runs on."""
        return self.num_categories * self.topics_per_category

    @property
    def num_items(self) -> int:
        """Size of the global item vocabulary."""
        return self.num_topics * self.items_per_category

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending config key."""
        positive = ("num_users", "targets_per_request", "hist_len", "num_categories")
        positive += ("items_per_category", "m", "R", "w_s", "num_actions", "chunk_users")
        positive += ("rows_per_file", "row_group_size", "hist_len_median", "hist_len_min")
        positive += ("topics_per_category",)
        checks: list[tuple[str, bool, str]] = [(k, getattr(self, k) >= 1, ">= 1") for k in positive]
        checks += [
            ("hist_len_dist", self.hist_len_dist in ("fixed", "lognormal"), "fixed|lognormal"),
            ("m", self.m <= self.num_topics, "<= num_categories * topics_per_category"),
            ("R", self.R <= self.num_topics, "<= num_categories * topics_per_category"),
            ("features", not (self.features and self.topics_per_category > 1), "off with topics"),
            ("hist_len_min", self.hist_len_min <= self.hist_len, "<= hist_len"),
            ("rho", 0.0 <= self.rho < 1.0, "in [0, 1)"),
            (
                "far",
                self.far == 0 or self.w_s <= self.far < self.hist_len,
                "0 or in [w_s, hist_len)",
            ),
            ("q", 0.0 <= self.q < 1.0, "in [0, 1)"),
            ("p_S", 0.0 <= self.p_S <= 1.0, "in [0, 1]"),
            ("p_R", 0.0 <= self.p_R <= 1.0 - self.p_S, "in [0, 1 - p_S]"),
            ("sigma_i", self.sigma_i >= 0.0, ">= 0"),
            ("hist_len_sigma", self.hist_len_sigma >= 0.0, ">= 0"),
            ("zipf", self.zipf >= 0.0, ">= 0"),
            ("mean_gap_s", self.mean_gap_s >= 0.0, ">= 0"),
            ("ts_span", self.ts_span >= 1, ">= 1"),
            ("test_fraction", 0.0 < self.test_fraction < 1.0, "in (0, 1)"),
            (
                "valid_fraction",
                0.0 <= self.valid_fraction < 1.0 - self.test_fraction,
                "in [0, 1 - test_fraction)",
            ),
            ("feat_step", self.feat_step > 0.0, "> 0"),
            ("feat_num_creators", self.feat_num_creators >= 1, ">= 1"),
            ("oracle_windows", all(w >= 1 for w in self.oracle_windows), "all >= 1"),
        ]
        for key, ok, want in checks:
            if not ok:
                raise ValueError(f"synth config: {key}={getattr(self, key)!r} must be {want}")


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="synth_schema", node=SynthConfig)


_register()


@dataclass
class _Globals:
    """Per-data-set draws: item biases, Zipf table, request times, split."""

    item_bias: np.ndarray
    zipf_cdf: np.ndarray
    request_ts: np.ndarray
    request_id: np.ndarray
    is_test: np.ndarray
    is_valid: np.ndarray
    cutoff_ts: int
    feat: FeatureTables | None = None  #: the feature block's tables (``features=true``)


def _globals(cfg: SynthConfig) -> _Globals:
    item_bias = np.random.default_rng([cfg.seed, 0]).normal(0.0, cfg.sigma_i, cfg.num_items)
    w = 1.0 / np.arange(1, cfg.items_per_category + 1, dtype=np.float64) ** cfg.zipf
    cdf = np.cumsum(w / w.sum())
    ts = cfg.ts_start + np.random.default_rng([cfg.seed, 1]).integers(0, cfg.ts_span, cfg.num_users)
    order = np.argsort(ts, kind="stable")
    request_id = np.empty(cfg.num_users, np.int64)
    request_id[order] = np.arange(cfg.num_users)  # request ids in time order
    n_test = min(max(int(round(cfg.test_fraction * cfg.num_users)), 1), cfg.num_users - 1)
    is_test = request_id >= cfg.num_users - n_test
    n_valid = int(round(cfg.valid_fraction * cfg.num_users))
    is_valid = ~is_test & (request_id >= cfg.num_users - n_test - n_valid)
    feat = FeatureTables.from_config(cfg) if cfg.features else None
    cutoff = int(ts[order[-n_test]])
    return _Globals(item_bias, cdf, ts, request_id, is_test, is_valid, cutoff, feat)


def _pick(rng: np.random.Generator, sets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One uniform element of ``sets[row]`` for each row in ``rows``."""
    return sets[rows, rng.integers(0, sets.shape[1], rows.size)]


def _subsets(rng: np.random.Generator, n: int, k: int, c: int) -> np.ndarray:
    """``n`` uniform k-subsets of ``range(c)`` (without replacement)."""
    return np.argpartition(rng.random((n, c)), k - 1, axis=1)[:, :k].astype(np.int64)


def _chunk(cfg: SynthConfig, g: _Globals, c0: int, c1: int) -> dict[str, Any]:
    """Generate users ``c0:c1``: the columns as flat arrays plus offsets."""
    rng = np.random.default_rng([cfg.seed, 2, c0])
    n, C, T = c1 - c0, cfg.num_topics, cfg.targets_per_request
    if cfg.hist_len_dist == "fixed":
        lens = np.full(n, cfg.hist_len, np.int64)
    else:
        raw = np.rint(cfg.hist_len_median * np.exp(cfg.hist_len_sigma * rng.standard_normal(n)))
        lens = np.clip(raw, cfg.hist_len_min, cfg.hist_len).astype(np.int64)
    S = _subsets(rng, n, cfg.m, C)
    Rset = _subsets(rng, n, cfg.R, C)
    off = np.concatenate(([0], np.cumsum(lens)))
    E = int(off[-1])
    user = np.repeat(np.arange(n), lens)
    pos_from_end = off[1:][user] - 1 - np.arange(E)
    # event kind from one uniform: recent part -> R_u w.p. q, then S_u w.p. rho, else background
    thr_r = np.where(pos_from_end < cfg.w_s, cfg.q, 0.0)
    u = rng.random(E)
    cat = rng.integers(0, C, E)
    is_r = u < thr_r
    rho = np.where(pos_from_end >= cfg.far, cfg.rho, 0.0)  # far-past planting: none before far
    is_s = ~is_r & (u < thr_r + (1.0 - thr_r) * rho)
    cat[is_s] = _pick(rng, S, user[is_s])
    cat[is_r] = _pick(rng, Rset, user[is_r])
    rank = np.minimum(np.searchsorted(g.zipf_cdf, rng.random(E), side="right"), g.zipf_cdf.size - 1)
    item = cat * cfg.items_per_category + rank
    action = rng.integers(0, cfg.num_actions, E)
    gaps = 1 + np.floor(rng.exponential(cfg.mean_gap_s, E)).astype(np.int64)
    csum = np.cumsum(gaps)
    req_ts = g.request_ts[c0:c1]
    # ts = request_ts - (sum of this and later gaps of the user): strictly increasing, < request_ts
    hist_ts = req_ts[user] - (csum[off[1:] - 1][user] - (csum - gaps))

    tu = rng.random((n, T))
    tcat = rng.integers(0, C, (n, T))
    rows = np.repeat(np.arange(n), T).reshape(n, T)
    from_s = tu < cfg.p_S
    from_r = ~from_s & (tu < cfg.p_S + cfg.p_R)
    tcat[from_s] = _pick(rng, S, rows[from_s])
    tcat[from_r] = _pick(rng, Rset, rows[from_r])
    trank = np.searchsorted(g.zipf_cdf, rng.random((n, T)), side="right")
    titem = tcat * cfg.items_per_category + np.minimum(trank, g.zipf_cdf.size - 1)
    in_s = (S[:, :, None] == tcat[:, None, :]).any(axis=1)
    in_r = (Rset[:, :, None] == tcat[:, None, :]).any(axis=1)
    bias = g.item_bias[titem]
    logit = cfg.b0 + bias + cfg.alpha * in_s + cfg.gamma * in_r
    feat = {}
    if g.feat is not None:  # own stream: the sequence's draws are the same with features off
        feat = synth_features.draw(g.feat, np.random.default_rng([cfg.seed, 3, c0]), n, T)
        logit = logit + g.feat.step * feat["effect"].reshape(n, T)
    p_true = expit(logit)
    click = (rng.random((n, T)) < p_true).astype(np.int8)
    k = cfg.topics_per_category  # the written category: the topic's coarse group
    return {"feat": feat, "topic": cat, "ttopic": tcat.reshape(-1),
        "lens": lens, "item": item, "cat": cat // k, "action": action, "ts": hist_ts,
        "tcat": tcat.reshape(-1) // k, "titem": titem.reshape(-1), "bias": bias.reshape(-1),
        "click": click.reshape(-1), "p_true": p_true.reshape(-1),
    }  # fmt: skip


def _select(ch: dict[str, Any], mask: np.ndarray, T: int) -> dict[str, Any]:
    """The rows of a chunk selected by the per-user ``mask``."""
    ev = np.repeat(mask, ch["lens"])
    tg = np.repeat(mask, T)
    out = {k: v[ev] for k, v in ch.items() if k in ("item", "cat", "topic", "action", "ts")}
    out.update(
        {
            k: v[tg]
            for k, v in ch.items()
            if k in ("tcat", "ttopic", "titem", "bias", "click", "p_true")
        }
    )
    out["lens"] = ch["lens"][mask]
    out["feat"] = synth_features.select(ch["feat"], mask, T) if ch["feat"] else {}
    return out


def _table(
    ch: dict[str, Any], T: int, user_id: np.ndarray, request_id: np.ndarray, request_ts: np.ndarray
) -> pa.Table:
    """The Arrow table (``REQUEST_SCHEMA``) of selected chunk rows."""
    hoff = pa.array(np.concatenate(([0], np.cumsum(ch["lens"]))).astype(np.int32))
    toff = pa.array(np.arange(len(user_id) + 1, dtype=np.int32) * T)

    def lst(off: pa.Array, values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(off, pa.array(values))

    cols = [
        pa.array(request_id, pa.int64()), pa.array(user_id, pa.int64()),
        pa.array(request_ts, pa.int64()),
        lst(hoff, ch["item"]), lst(hoff, ch["cat"]), lst(hoff, ch["action"]), lst(hoff, ch["ts"]),
        lst(toff, ch["titem"]), lst(toff, ch["tcat"]), lst(toff, ch["click"]),
        lst(toff, ch["p_true"]),
    ]  # fmt: skip
    if not ch["feat"]:
        return pa.Table.from_arrays(cols, schema=REQUEST_SCHEMA)
    cols += synth_features.columns(ch["feat"], T)
    return pa.Table.from_arrays(cols, schema=synth_features.schema(REQUEST_SCHEMA))


def generate(cfg: SynthConfig, preset: str | None = None) -> dict[str, Any]:
    """Generate the data set described by ``cfg`` into ``cfg.out``; return a summary."""
    from tqdm import tqdm

    cfg.validate()
    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    g = _globals(cfg)
    params = oracle.OracleParams.from_mapping(cfg)
    windows = oracle.oracle_windows(cfg.hist_len, cfg.oracle_windows)
    for split in ("train", "valid", "test"):  # parts of an earlier run would mix with this one
        for stale in (out / split).glob("part-*.parquet"):
            stale.unlink()
        (out / split / MANIFEST_NAME).unlink(missing_ok=True)  # SplitWriter writes a new one
    names = ("train", "valid", "test") if g.is_valid.any() else ("train", "test")
    schema = synth_features.schema(REQUEST_SCHEMA) if g.feat else REQUEST_SCHEMA
    writers = {
        s: SplitWriter(out / s, schema, cfg.rows_per_file, cfg.row_group_size, cfg.compression)
        for s in names
    }  # fmt: skip
    acc: dict[str, list[np.ndarray]] = {k: [] for k in ("click", "p_true", "user")}
    scores: dict[int, list[np.ndarray]] = {w: [] for w in windows}
    T, hist_total = cfg.targets_per_request, 0
    bar = tqdm(total=cfg.num_users, unit="user", file=sys.stderr, disable=not cfg.progress)
    for c0 in range(0, cfg.num_users, cfg.chunk_users):
        c1 = min(c0 + cfg.chunk_users, cfg.num_users)
        ch = _chunk(cfg, g, c0, c1)
        hist_total += int(ch["lens"].sum())
        users = np.arange(c0, c1)
        is_train = ~g.is_test[c0:c1] & ~g.is_valid[c0:c1]
        splits = (("train", is_train), ("valid", g.is_valid[c0:c1]), ("test", g.is_test[c0:c1]))
        for split, mask in splits:
            if not mask.any():
                continue
            sub = _select(ch, mask, T)
            u = users[mask]
            writers[split].add(_table(sub, T, u, g.request_id[u], g.request_ts[u]))
            if split == "train" and g.feat:  # activity's standardisation: the train split
                acc.setdefault("activity", []).append(sub["feat"]["activity"])
            if split == "test":
                hoff = np.concatenate(([0], np.cumsum(sub["lens"])))
                toff = np.arange(u.size + 1) * T
                args = (sub["topic"], hoff, sub["ttopic"], toff, sub["bias"])  # hidden topics
                if g.feat is None:
                    sc = oracle.oracle_scores(*args, params, windows)
                else:
                    sc, extra = oracle_features.feature_oracle_scores(
                        *args, sub["feat"]["effect"], sub["p_true"], params, windows, g.feat
                    )
                    for k, v in extra.items():
                        acc.setdefault(k, []).append(v)
                for w in windows:
                    scores[w].append(sc[w])
                acc["click"].append(sub["click"])
                acc["p_true"].append(sub["p_true"])
                acc["user"].append(np.repeat(u, T))
        bar.update(c1 - c0)
    bar.close()
    files = {s: w.close() for s, w in writers.items()}
    cat = {k: np.concatenate(v) for k, v in acc.items()}
    report = oracle.oracle_report(
        cat["click"], cat["p_true"], cat["user"], {w: np.concatenate(s) for w, s in scores.items()},
        num_requests=int(g.is_test.sum()), hist_len_max=cfg.hist_len, params=asdict(params),
    )  # fmt: skip
    specs: tuple = ()
    if g.feat:
        full = np.concatenate(scores[max(windows)])
        report["features"] = oracle_features.features_report(
            cat["click"], cat["user"], full, cat, g.feat
        )
        specs = synth_features.train_specs(cat.get("activity"), cfg.feat_num_creators)
    config = asdict(cfg)
    np.save(out / "item_bias.npy", g.item_bias)
    meta = DatasetMeta(
        format=FORMAT,
        tasks=("click",),
        num_items=cfg.num_items,
        num_categories=cfg.num_categories,
        num_actions=cfg.num_actions,
        targets_per_request=T,
        hist_len_max=cfg.hist_len,
        num_requests={
            "train": int((~g.is_test & ~g.is_valid).sum()),
            **({"valid": int(g.is_valid.sum())} if g.is_valid.any() else {}),
            "test": int(g.is_test.sum()),
        },
        files={s: tuple(str(p.relative_to(out)) for p in fs) for s, fs in files.items()},
        features=specs,
        extra={"preset": preset, "test_cutoff_ts": g.cutoff_ts, "config": config},
    )
    meta.write(out)
    (out / "oracle.json").write_text(json.dumps(report, indent=2) + "\n")
    return {"out": str(out), "seconds": time.perf_counter() - t0, "hist_events": hist_total,
            "meta": meta.to_dict(), "oracle": report}  # fmt: skip


def format_summary(summary: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`generate`'s result."""
    meta, rep = summary["meta"], summary["oracle"]
    n = meta["num_requests"]
    lines = [
        f"wrote {summary['out']}: {n['train']} train + "
        + (f"{n['valid']} valid + " if n.get("valid") else "")
        + f"{n['test']} test requests, "
        f"{summary['hist_events']:,} history events, {summary['seconds']:.1f}s",
        "oracle on test (AUC / GAUC): "
        + ", ".join(f"w={r['window']}: {r['auc']:.4f}/{r['gauc']:.4f}" for r in rep["windows"])
        + f", p_true: {rep['p_true']['auc']:.4f}/{rep['p_true']['gauc']:.4f}",
    ]
    if "features" in rep:
        lines.append(oracle_features.summary_line(rep["features"]))
    return "\n".join(lines)


def _main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    from longseq.config import CONFIG_DIR

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="synth")
    def run(cfg: DictConfig) -> None:
        conf = OmegaConf.to_object(cfg)
        assert isinstance(conf, SynthConfig)
        preset = HydraConfig.get().runtime.choices.get("preset")
        print(format_summary(generate(conf, preset=preset)))

    run()


if __name__ == "__main__":
    _main()
