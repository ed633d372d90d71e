"""The oracle of a generated data set with the feature block (`longseq.datasets.synth_features`).

A target's click logit is ``base(s, r) + step * k``: ``base`` the sequence story's logit, ``k``
the integer feature effect, independent of the history and of ``(s, r)``. So:

* **with features** (``k`` known), the window-``w`` oracle is
  ``sum_{s,r} P(s,r | counts_w) sigmoid(base(s,r) + step k)``: the per-window ceilings of
  ``oracle.json`` (what a model seeing the features and ``w`` events can do);
* **without features** (``k`` unknown), ``k`` is marginalised exactly over its lattice pmf:
  ``sum_{s,r} P(s,r | counts) sum_j pmf(j) sigmoid(base(s,r) + step (lo + j))``, full window;
* ``p_true_without``: the same marginal with the true ``(s, r)`` (the truth without features).

``oracle.json`` gets a ``features`` entry with ``with`` / ``without`` / ``p_true_without`` (AUC,
GAUC), ``gap_auc`` and ``gap_gauc`` (with - without) and the lattice (``step``, ``lo``, ``pmf``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, logit

from longseq.data.meta import DatasetMeta
from longseq.datasets import oracle
from longseq.datasets.oracle import STATES, OracleParams, WindowCounts
from longseq.datasets.synth_features import GOOD_TAGS, FeatureTables, effect_units
from longseq.metrics import auc, gauc

_STATE_S = np.array([s for s, _ in STATES], dtype=np.float64)
_STATE_R = np.array([r for _, r in STATES], dtype=np.float64)


def _base(tgt_bias: np.ndarray, params: OracleParams) -> np.ndarray:
    """The sequence logit of each target in each state, ``(n, 4)``."""
    b = np.asarray(tgt_bias, dtype=np.float64)[:, None]
    return params.b0 + b + params.alpha * _STATE_S[None, :] + params.gamma * _STATE_R[None, :]


def marginal_sigmoid(logits: np.ndarray, tab: FeatureTables) -> np.ndarray:
    """``E_k[sigmoid(logits + step k)]`` over the exact pmf of ``k`` (elementwise)."""
    lo, pmf = tab.effect_pmf()
    shifts = tab.step * (lo + np.arange(pmf.size))
    x = np.asarray(logits, dtype=np.float64)
    out = np.zeros_like(x)
    for s, p in zip(shifts, pmf, strict=True):  # a loop over the lattice bounds the memory
        out += p * expit(x + s)
    return out


def with_features(
    counts: WindowCounts, tgt_bias: np.ndarray, effect: np.ndarray, params: OracleParams,
    tab: FeatureTables, prior: str = "target",
) -> np.ndarray:  # fmt: skip
    """``E[p | counts, k]``: the oracle score with the features (their effect ``k``) known."""
    post = oracle.posterior(counts, params, prior)
    shift = tab.step * np.asarray(effect, dtype=np.float64)[:, None]
    return (post * expit(_base(tgt_bias, params) + shift)).sum(axis=1)


def without_features(
    counts: WindowCounts, tgt_bias: np.ndarray, params: OracleParams, tab: FeatureTables,
    prior: str = "target",
) -> np.ndarray:  # fmt: skip
    """``E[p | counts]`` with the feature effect marginalised over its exact lattice pmf."""
    post = oracle.posterior(counts, params, prior)
    return (post * marginal_sigmoid(_base(tgt_bias, params), tab)).sum(axis=1)


def feature_oracle_scores(
    hist_cat: np.ndarray, hist_offsets: np.ndarray, tgt_cat: np.ndarray, tgt_offsets: np.ndarray,
    tgt_bias: np.ndarray, effect: np.ndarray, p_true: np.ndarray, params: OracleParams,
    windows: Sequence[int], tab: FeatureTables, prior: str = "target",
) -> tuple[dict[int, np.ndarray], dict[str, np.ndarray]]:  # fmt: skip
    """Per-window scores with the features, and the full-window ``without`` score and
    ``p_true_without`` (the truth with ``k`` marginalised) per target."""
    counts = oracle.window_counts(
        hist_cat, hist_offsets, tgt_cat, tgt_offsets, windows, params.w_s, params.long_start
    )
    scores = {w: with_features(c, tgt_bias, effect, params, tab, prior) for w, c in counts.items()}
    base_true = logit(np.asarray(p_true, dtype=np.float64)) - tab.step * np.asarray(effect)
    extra = {
        "without": without_features(counts[max(windows)], tgt_bias, params, tab, prior),
        "p_true_without": marginal_sigmoid(base_true, tab),
    }
    return scores, extra


def features_report(
    labels: np.ndarray, groups: np.ndarray, with_full: np.ndarray,
    extra: Mapping[str, np.ndarray], tab: FeatureTables,
) -> dict[str, Any]:  # fmt: skip
    """``oracle.json``'s ``features`` entry."""

    def row(scores: np.ndarray) -> dict[str, float]:
        return {"auc": auc(labels, scores), "gauc": gauc(labels, scores, groups).gauc}

    out = {"with": row(with_full), "without": row(extra["without"])}
    out["p_true_without"] = row(extra["p_true_without"])
    out["gap_auc"] = out["with"]["auc"] - out["without"]["auc"]
    out["gap_gauc"] = out["with"]["gauc"] - out["without"]["gauc"]
    lo, pmf = tab.effect_pmf()
    out["lattice"] = {"step": tab.step, "lo": lo, "pmf": [float(p) for p in pmf]}
    return out


def summary_line(f: Mapping[str, Any]) -> str:
    """The generator summary's line of a ``features`` entry."""
    return (
        f"features (full window, AUC / GAUC): with {f['with']['auc']:.4f}/{f['with']['gauc']:.4f}"
        f", without {f['without']['auc']:.4f}/{f['without']['gauc']:.4f}"
        f", gap {f['gap_auc']:+.4f}/{f['gap_gauc']:+.4f}"
    )


def oracle_from_dataset(
    path: str | Path, split: str = "test", prior: str = "target"
) -> dict[str, Any]:
    """`oracle_files.oracle_from_dataset` for a data set with the feature block: the effects are
    recomputed from the written feature columns and the config."""
    import pyarrow.parquet as pq

    root = Path(path)
    meta = DatasetMeta.read(root)
    cfg = meta.require_extra("config")
    params, tab = OracleParams.from_mapping(cfg), FeatureTables.from_config(cfg)
    table = pq.read_table(root / split)
    d = {n: _flat(table, n) for n in table.column_names if n.startswith(("hist_cat", "tgt_"))}
    h_off, h_cat = d["hist_category_id"]
    t_off, t_cat = d["tgt_category_id"]
    req = {k: table.column(f"feat_{k}").to_numpy() for k in ("age", "activity", "hour")}
    i_off, i_val = _flat(table, "feat_interests")
    req["n_tags"] = np.diff(i_off)
    rows = np.repeat(np.arange(table.num_rows), req["n_tags"])
    req["n_good"] = np.bincount(rows, i_val < GOOD_TAGS, table.num_rows).astype(np.int64)
    tgt = {k: d[f"tgt_feat_{k}"][1] for k in ("creator", "duration", "audience")}
    effect = effect_units(tab, req, tgt, np.diff(t_off))
    windows = oracle.oracle_windows(meta.hist_len_max, cfg["oracle_windows"])
    bias = np.load(root / "item_bias.npy")[d["tgt_item_id"][1]]
    p_true = d["tgt_p_true"][1]
    scores, extra = feature_oracle_scores(
        h_cat, h_off, t_cat, t_off, bias, effect, p_true, params, windows, tab, prior
    )
    labels = d["tgt_click"][1]
    groups = np.repeat(table.column("user_id").to_numpy(), np.diff(t_off))
    report = oracle.oracle_report(
        labels, p_true, groups, scores, num_requests=table.num_rows,
        hist_len_max=meta.hist_len_max, params=asdict(params), split=split,
    )  # fmt: skip
    report["features"] = features_report(labels, groups, scores[max(windows)], extra, tab)
    return report


def _flat(table: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    arr = table.column(name).combine_chunks()
    off = arr.offsets.to_numpy().astype(np.int64)
    return off - off[0], arr.values.to_numpy(zero_copy_only=False)[off[0] : off[-1]]
