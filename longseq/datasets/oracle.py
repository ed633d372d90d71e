"""The oracle of the planted-long-range-interest (PLI) generator: the best score from a window.

With only the most recent ``w`` events of a history visible, the counts of the target's category
in the visible *long* part (events older than the ``w_s`` most recent) and in the visible *recent*
part (the ``w_s`` most recent events) are sufficient statistics for the target's membership
``s = [c_t in S_u]`` and ``r = [c_t in R_u]``. Given ``(s, r)`` the events are i.i.d., so each
count is binomial with a per-event rate

- long part:   ``p_L(s)   = (1 - rho) / C + rho * s / m``
- recent part: ``p_R(s,r) = q * r / R + (1 - q) * p_L(s)``

With far-past planting (``far > 0``, ``far >= w_s``) interest events are planted only at
positions at least ``far`` events from the newest: the long part is then the visible events older
than ``far`` (rate ``p_L(s)``), the recent part's non-``R_u`` share is plain background
(``p_R(s,r) = q * r / R + (1 - q) / C``), and the events in between have rate ``1 / C`` whatever
the state, so they carry no evidence and drop out of the likelihood.

The oracle computes the joint posterior over the four states ``(s, r)`` (binomial likelihoods
times a prior) and scores a target with

    E[p | window] = sum_{s,r} P(s, r | counts) * sigmoid(b0 + b_i + alpha*s + gamma*r).

The prior is the one of a *target's* category (``prior="target"``, the default and the
Bayes-correct one): a target is drawn from ``S_u`` with probability ``p_S``, from ``R_u`` with
``p_R``, else uniformly, and a fixed category is in ``S_u`` w.p. ``m/C``, in ``R_u`` w.p. ``R/C``
(independently). Two approximations are kept for comparison only: ``prior="factorized"``
multiplies the target's marginals ``P(s) P(r)`` (dropping their anti-correlation: a target drawn
from ``R_u`` is rarely in ``S_u``; this reproduces the reference table in docs/data-format.md), and
``prior="uniform"`` uses independent ``m/C`` and ``R/C`` (a *history* category's prior), which
ignores how targets are drawn and badly under-weights the long-range evidence.
The "exactly m interests" coupling between categories is ignored: the oracle looks only at the
target category's own counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
from scipy.special import expit, logsumexp, xlog1py, xlogy

from longseq.metrics import auc, gauc

#: Windows reported by default (those ``<=`` the maximum history length, plus that length).
DEFAULT_WINDOWS: tuple[int, ...] = (50, 100, 500, 1000, 2000, 5000, 10000)

#: The four membership states ``(s, r)`` in the order used by :func:`posterior`.
STATES: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))

_EVENTS_PER_BLOCK = 8_000_000


@dataclass(frozen=True)
class OracleParams:
    """The generator parameters the oracle depends on (names as in ``SynthConfig``)."""

    num_categories: int
    m: int
    R: int
    w_s: int
    q: float
    rho: float
    p_S: float
    p_R: float
    b0: float
    alpha: float
    gamma: float
    far: int = 0  #: interest events only at positions >= far from the newest (0: anywhere)

    @property
    def long_start(self) -> int:
        """First position (from the newest) of the evidence-carrying long part."""
        return max(self.w_s, self.far)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | Any) -> OracleParams:
        """Pick the oracle's fields from a mapping or an object with attributes (a config).

        Fields with a default (``far``) may be absent (data sets written before they existed).
        With ``topics_per_category`` k > 1 the oracle's ``num_categories`` is the number of
        hidden topics, ``num_categories * k`` (the story runs on the topics).
        """
        if isinstance(cfg, Mapping):
            has, get = cfg.__contains__, cfg.__getitem__
        else:
            has, get = (lambda k: hasattr(cfg, k)), (lambda k: getattr(cfg, k))
        values = {f.name: get(f.name) for f in fields(cls) if has(f.name)}
        values["num_categories"] *= topics_per_category(cfg)
        return cls(**values)


def topics_per_category(cfg: Mapping[str, Any] | Any) -> int:
    """A generator config's hidden topics per written category (1 for data sets before it)."""
    k = cfg.get("topics_per_category", 1) if isinstance(cfg, Mapping) else cfg.topics_per_category
    return int(k)


class WindowCounts(NamedTuple):
    """Per-target counts of the target's category in the visible window."""

    n_long: np.ndarray  #: occurrences in the visible long part (positions >= long_start)
    len_long: np.ndarray  #: number of visible long-part events
    n_recent: np.ndarray  #: occurrences in the visible recent part
    len_recent: np.ndarray  #: number of visible recent-part events


def oracle_windows(hist_len_max: int, candidates: Sequence[int] = DEFAULT_WINDOWS) -> list[int]:
    """Windows to report: the candidates ``<= hist_len_max`` and ``hist_len_max`` itself."""
    return sorted({int(w) for w in candidates if 0 < w <= hist_len_max} | {int(hist_len_max)})


def event_rates(params: OracleParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-event rates of a category: ``p_long[s]`` (shape 2) and ``p_recent[s, r]`` (2 x 2)."""
    s = np.array([0.0, 1.0])
    p_long = (1.0 - params.rho) / params.num_categories + params.rho * s / params.m
    r = np.array([0.0, 1.0])
    # far-past planting: the recent part holds no planted events, only R_u and background
    p_rest = p_long if params.far == 0 else np.full(2, 1.0 / params.num_categories)
    p_recent = params.q * r[None, :] / params.R + (1.0 - params.q) * p_rest[:, None]
    return p_long, p_recent


def state_prior(params: OracleParams, prior: str = "target") -> np.ndarray:
    """Prior ``P(s, r)`` over :data:`STATES` for a target's category (see the module doc)."""
    ps, pr = params.m / params.num_categories, params.R / params.num_categories
    bern_s = np.array([1.0 - ps, ps])
    bern_r = np.array([1.0 - pr, pr])
    indep = bern_s[:, None] * bern_r[None, :]  # [s, r]
    if prior == "uniform":
        joint = indep
    elif prior in ("target", "factorized"):
        from_s = np.array([[0.0, 0.0], bern_r])  # s = 1, r ~ Bern(R/C)
        from_r = np.stack([np.zeros(2), np.ones(2)], axis=1) * bern_s[:, None]  # r = 1
        joint = params.p_S * from_s + params.p_R * from_r + (1 - params.p_S - params.p_R) * indep
        if prior == "factorized":  # product of the target's marginals P(s) P(r)
            joint = joint.sum(axis=1)[:, None] * joint.sum(axis=0)[None, :]
    else:
        raise ValueError(f"prior must be 'target', 'factorized' or 'uniform', got {prior!r}")
    return np.array([joint[s, r] for s, r in STATES])


def window_counts(
    hist_cat: np.ndarray,
    hist_offsets: np.ndarray,
    tgt_cat: np.ndarray,
    tgt_offsets: np.ndarray,
    windows: Sequence[int],
    w_s: int,
    long_start: int | None = None,
) -> dict[int, WindowCounts]:
    """Counts of each target's category in the last ``w`` events of its request's history.

    The recent part is the newest ``w_s`` events, the long part the visible events at least
    ``long_start`` (default ``w_s``) from the newest; events in between are not counted.
    ``hist_cat`` / ``tgt_cat`` are flat values of ragged lists whose request ``i`` spans
    ``offsets[i]:offsets[i + 1]``. Returns one :class:`WindowCounts` per window, each array with
    one entry per target (in ``tgt_cat`` order).
    """
    hist_cat = np.asarray(hist_cat, dtype=np.int64)
    tgt_cat = np.asarray(tgt_cat, dtype=np.int64)
    h_off = np.asarray(hist_offsets, dtype=np.int64)
    t_off = np.asarray(tgt_offsets, dtype=np.int64)
    n_req = h_off.size - 1
    if t_off.size != n_req + 1:
        raise ValueError(f"{n_req} histories but {t_off.size - 1} target lists")
    out = {w: [np.empty(tgt_cat.size, np.int64) for _ in range(4)] for w in windows}
    # blocks of requests bound the memory of the sort below
    start = 0
    while start < n_req:
        stop = int(np.searchsorted(h_off, h_off[start] + _EVENTS_PER_BLOCK, side="right"))
        stop = min(max(stop - 1, start + 1), n_req)
        ls = w_s if long_start is None else long_start
        _count_block(hist_cat, h_off, tgt_cat, t_off, start, stop, windows, w_s, ls, out)
        start = stop
    return {w: WindowCounts(*arrs) for w, arrs in out.items()}


def _count_block(hist_cat, h_off, tgt_cat, t_off, a, b, windows, w_s, long_start, out) -> None:
    h = hist_cat[h_off[a] : h_off[b]]
    lens = np.diff(h_off[a : b + 1])
    req = np.repeat(np.arange(b - a, dtype=np.int64), lens)
    ends = (h_off[a + 1 : b + 1] - h_off[a])[req]
    pos_from_end = ends - 1 - np.arange(h.size, dtype=np.int64)  # 0 = newest
    stride = int(lens.max(initial=0)) + 1
    ncat = int(max(h.max(initial=0), tgt_cat[t_off[a] : t_off[b]].max(initial=0))) + 1
    # sort events by (request, category, position from the end): one block per (request, cat)
    keys = np.sort((req * ncat + h) * stride + pos_from_end)
    t_slice = slice(t_off[a], t_off[b])
    t_req = np.repeat(np.arange(b - a, dtype=np.int64), np.diff(t_off[a : b + 1]))
    base = (t_req * ncat + tgt_cat[t_slice]) * stride
    lo = np.searchsorted(keys, base)
    t_len = lens[t_req]
    for w in windows:
        vis = np.minimum(t_len, w)
        rec = np.minimum(vis, w_s)
        lstart = np.minimum(vis, max(long_start, w_s))
        n_vis = np.searchsorted(keys, base + vis) - lo
        n_rec = np.searchsorted(keys, base + rec) - lo
        n_lstart = np.searchsorted(keys, base + lstart) - lo
        n_long, len_long, n_recent, len_recent = out[w]
        n_long[t_slice], len_long[t_slice] = n_vis - n_lstart, vis - lstart
        n_recent[t_slice], len_recent[t_slice] = n_rec, rec


def posterior(counts: WindowCounts, params: OracleParams, prior: str = "target") -> np.ndarray:
    """Posterior ``P(s, r | counts)`` per target, shape ``(n, 4)`` over :data:`STATES`."""
    p_long, p_recent = event_rates(params)
    with np.errstate(divide="ignore"):
        logp = np.log(state_prior(params, prior))
    n_l, len_l, n_r, len_r = (np.asarray(c, dtype=np.float64)[:, None] for c in counts)
    pl = np.array([p_long[s] for s, _ in STATES])[None, :]
    pr = np.array([p_recent[s, r] for s, r in STATES])[None, :]
    ll = (
        xlogy(n_l, pl)
        + xlog1py(len_l - n_l, -pl)
        + xlogy(n_r, pr)
        + xlog1py(len_r - n_r, -pr)
        + logp[None, :]
    )
    return np.exp(ll - logsumexp(ll, axis=1, keepdims=True))


def expected_p(
    counts: WindowCounts, tgt_bias: np.ndarray, params: OracleParams, prior: str = "target"
) -> np.ndarray:
    """``E[p | counts]`` per target: the oracle score (``tgt_bias`` = the items' ``b_i``)."""
    post = posterior(counts, params, prior)
    b = np.asarray(tgt_bias, dtype=np.float64)[:, None]
    s = np.array([s for s, _ in STATES], dtype=np.float64)[None, :]
    r = np.array([r for _, r in STATES], dtype=np.float64)[None, :]
    p = expit(params.b0 + b + params.alpha * s + params.gamma * r)
    return (post * p).sum(axis=1)


def oracle_scores(
    hist_cat: np.ndarray,
    hist_offsets: np.ndarray,
    tgt_cat: np.ndarray,
    tgt_offsets: np.ndarray,
    tgt_bias: np.ndarray,
    params: OracleParams,
    windows: Sequence[int],
    prior: str = "target",
) -> dict[int, np.ndarray]:
    """Oracle scores ``E[p | last w events]`` per target for each window ``w``."""
    counts = window_counts(
        hist_cat, hist_offsets, tgt_cat, tgt_offsets, windows, params.w_s, params.long_start
    )
    return {w: expected_p(c, tgt_bias, params, prior) for w, c in counts.items()}


def ceiling_table(
    labels: np.ndarray,
    p_true: np.ndarray,
    groups: np.ndarray,
    scores: Mapping[int, np.ndarray],
) -> dict[str, Any]:
    """AUC and GAUC (impression-weighted, grouped by ``groups``) per window and for ``p_true``."""
    rows = []
    for w in sorted(scores):
        rows.append(
            {
                "window": int(w),
                "auc": auc(labels, scores[w]),
                "gauc": gauc(labels, scores[w], groups).gauc,
            }
        )
    truth = {"auc": auc(labels, p_true), "gauc": gauc(labels, p_true, groups).gauc}
    return {"windows": rows, "p_true": truth}


def oracle_report(
    labels: np.ndarray,
    p_true: np.ndarray,
    groups: np.ndarray,
    scores: Mapping[int, np.ndarray],
    *,
    num_requests: int,
    hist_len_max: int,
    params: Mapping[str, Any],
    task: str = "click",
    split: str = "test",
) -> dict[str, Any]:
    """The ``oracle.json`` document (format fixed: the evaluator reads it)."""
    table = ceiling_table(labels, p_true, groups, scores)
    return {
        "task": task,
        "split": split,
        "num_requests": int(num_requests),
        "num_targets": int(np.asarray(labels).size),
        "hist_len_max": int(hist_len_max),
        "windows": table["windows"],
        "p_true": table["p_true"],
        "params": dict(params),
    }
