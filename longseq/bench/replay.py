"""Suite ``replay``: returning users served from a user-keyed incremental cache against
re-encoding every request's history from scratch.

A synthetic stream (seeded): ``users`` users, each with a history of ``length`` events to start
with; requests arrive at Poisson times (exponential gaps, mean ``gap_s`` seconds), each from a
user drawn uniformly, who has logged 1-20 new events since their previous request (their first
request brings the whole history). Every request is served twice, side by side (the order
alternates), by one model (the STCA recipe with ``model.stca.time_bias``, so that its state can
be kept across requests; `longseq.serve.incremental`):

* **incremental**: `UserHistoryCache.request` (a miss encodes the history; a partial hit encodes
  only the new events and evicts as many of the oldest past the ``length`` window; a hit encodes
  nothing), then ``Scorer.score`` of the K candidates;
* **full**: ``Scorer.encode`` of the request's whole window at its request time, then
  ``Scorer.score``: what a server without the incremental state pays on every request.

Both paths give the same probabilities (checked on every request: max difference reported).
Reported per K in ``candidates``: p50 / p99 latency of the user side and of the whole request,
for returning users (partial hits) and for first requests (misses); the partial hit's user side
as a fraction of the full encode's (median of the per-request ratios); cache hit / partial /
miss counts; bytes per cached user. Loads TorchRec (the model's embedding lookup).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from longseq.bench.common import BenchArgs, result_payload
from longseq.bench.serve import RECIPE, VOCAB

NEW_EVENTS = (1, 20)  # new events per returning request, uniform


def grid(args: BenchArgs) -> dict[str, Any]:
    """Shapes of this mode."""
    if args.tiny:
        return dict(length=64, users=3, requests=8, candidates=[1, 4], d_model=16, num_heads=2,
                    num_layers=2, ffn_depth=1, gap_s=5.0)  # fmt: skip
    if args.quick:
        return dict(length=10240, users=4, requests=24, candidates=[1, 16, 512], d_model=128,
                    num_heads=4, num_layers=3, ffn_depth=2, gap_s=5.0)  # fmt: skip
    return dict(length=10240, users=8, requests=80, candidates=[1, 16, 512], d_model=128,
                num_heads=4, num_layers=3, ffn_depth=2, gap_s=5.0)  # fmt: skip


def _model(g: dict[str, Any], args: BenchArgs):  # noqa: ANN202 - (Scorer, UserHistoryCache)
    from longseq.model.embeddings import TableSizes
    from longseq.model.model import LongSeqModel, ModelConfig
    from longseq.model.stca import STCAConfig
    from longseq.serve import Scorer
    from longseq.serve.incremental import IncrementalEncoder, UserHistoryCache

    cfg = STCAConfig(d_model=g["d_model"], num_heads=g["num_heads"], num_layers=g["num_layers"],
                     ffn_depth=g["ffn_depth"], position_bias=True, time_bias=True, **RECIPE)  # fmt: skip
    torch.manual_seed(0)
    sizes = TableSizes(VOCAB["items"], VOCAB["categories"], 8)
    model = LongSeqModel(ModelConfig(tower="stca", stca=cfg), sizes, ["click"])
    scorer = Scorer(model.to(args.torch_device).eval(), cache_bytes=0)
    cache = UserHistoryCache(IncrementalEncoder(scorer, window=g["length"]), max_bytes=1 << 40)
    return scorer, cache


def stream(g: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """The requests, in arrival order: ``user``, ``request_ts`` and the user's whole log
    (``item``, ``category``, ``action``, ``ts``: int64 arrays, oldest -> newest) at that time."""
    rng = np.random.default_rng(seed)
    n, t = g["length"], 10**6
    logs: dict[int, dict[str, np.ndarray]] = {}
    out = []
    for _ in range(g["requests"]):
        t += max(1, int(rng.exponential(g["gap_s"])))
        u = int(rng.integers(g["users"]))
        m = n if u not in logs else int(rng.integers(NEW_EVENTS[0], NEW_EVENTS[1] + 1))
        last = int(logs[u]["ts"][-1]) if u in logs else t - 10**6
        new = {
            "item": rng.integers(VOCAB["items"], size=m),
            "category": rng.integers(VOCAB["categories"], size=m),
            "action": rng.integers(8, size=m),
            "ts": np.sort(rng.integers(last, t + 1, size=m)),
        }
        logs[u] = {k: np.concatenate([logs[u][k], v]) if u in logs else v for k, v in new.items()}
        out.append({"user": u, "request_ts": t, **logs[u]})
    return out


def _timed(fn):  # noqa: ANN001, ANN202 - (seconds, result)
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _incremental(cache, scorer, r: dict[str, Any], items, cats):  # noqa: ANN001, ANN202
    """(user-side seconds, scoring seconds, probabilities) of request ``r`` through the cache."""
    cols = (r["item"], r["category"], r["action"], r["ts"])
    us, side = _timed(lambda: cache.request(r["user"], *cols, r["request_ts"]))
    ss, p = _timed(lambda: scorer.score(side, items, cats))
    return us, ss, p


def _full(scorer, r: dict[str, Any], items, cats, window: int):  # noqa: ANN001, ANN202
    """The same through a full encode of the request's window."""
    from longseq.serve import make_request

    cols = (r["item"], r["category"], r["action"], r["ts"])
    req = make_request(*cols, r["request_ts"], window=window)
    us, side = _timed(lambda: scorer.encode(req))
    ss, p = _timed(lambda: scorer.score(side, items, cats))
    return us, ss, p


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def run(args: BenchArgs) -> dict[str, Any]:
    """Run the suite; return the JSON payload."""
    g = grid(args)
    requests = stream(g)
    rng = np.random.default_rng(1)
    k_max = max(g["candidates"])
    cand_items = rng.integers(VOCAB["items"], size=k_max)
    cand_cats = rng.integers(VOCAB["categories"], size=k_max)
    summary: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    for k in g["candidates"]:
        scorer, cache = _model(g, args)  # a cold cache per K: each K replays the same stream
        items, cats = cand_items[:k].tolist(), cand_cats[:k].tolist()
        rows: list[dict[str, Any]] = []
        max_diff = 0.0
        with torch.inference_mode():
            for i, r in enumerate(requests):
                before = (cache.hits, cache.partial_hits, cache.misses)

                if i % 2:
                    f = _full(scorer, r, items, cats, g["length"])
                    inc = _incremental(cache, scorer, r, items, cats)
                else:
                    inc = _incremental(cache, scorer, r, items, cats)
                    f = _full(scorer, r, items, cats, g["length"])
                after = (cache.hits, cache.partial_hits, cache.misses)
                kind = ("hit", "partial", "miss")[[a - b for a, b in zip(after, before)].index(1)]
                max_diff = max(max_diff, float((inc[2] - f[2]).abs().max()))
                rows.append({"kind": kind, "inc_user_s": inc[0], "inc_request_s": inc[0] + inc[1],
                             "full_user_s": f[0], "full_request_s": f[0] + f[1]})  # fmt: skip
        bytes_per_user = [cache.lru.peek((u, 0)).nbytes() for u in range(g["users"])
                          if cache.lru.peek((u, 0)) is not None]  # fmt: skip
        entry: dict[str, Any] = {
            "requests": len(rows),
            "hits": cache.hits,
            "partial_hits": cache.partial_hits,
            "misses": cache.misses,
            "bytes_per_user": statistics.median(bytes_per_user) if bytes_per_user else 0,
            "max_abs_diff": max_diff,
        }
        for kind in ("partial", "miss"):
            sel = [x for x in rows if x["kind"] == kind]
            for path in ("inc", "full"):
                for part in ("user", "request"):
                    xs = [x[f"{path}_{part}_s"] for x in sel]
                    entry[f"{kind}_{path}_{part}_p50_s"] = _pct(xs, 50)
                    entry[f"{kind}_{path}_{part}_p99_s"] = _pct(xs, 99)
        partial = [x for x in rows if x["kind"] == "partial"]
        if partial:
            entry["partial_user_fraction_of_full"] = statistics.median(
                x["inc_user_s"] / x["full_user_s"] for x in partial
            )
            entry["partial_request_fraction_of_full"] = statistics.median(
                x["inc_request_s"] / x["full_request_s"] for x in partial
            )
        summary[f"K={k}"] = entry
        results.extend({"candidates": k, **x} for x in rows)
    for path in ("inc", "full"):  # cost(K_max) / cost(1) of a whole returning request
        lo = summary[f"K={min(g['candidates'])}"].get(f"partial_{path}_request_p50_s")
        hi = summary[f"K={k_max}"].get(f"partial_{path}_request_p50_s")
        if lo and hi:
            summary[f"{path}_cost_ratio_max_vs_1"] = hi / lo
    notes = [
        "each request is served by both paths, side by side; the cache is cold at the start of "
        "each K (the same stream is replayed per K)",
        "the model's weights are random: timings and equality, not quality",
    ]
    return result_payload(args, "replay", g, results, summary, notes)


def render(payload: dict[str, Any]) -> str:
    """The section's markdown."""
    s, g = payload["summary"], payload["config"]
    ms = lambda x: f"{x * 1e3:.1f}" if x == x else "-"  # noqa: E731 - NaN: no such request
    lines = [
        f"One model (STCA recipe + `time_bias`, d={g['d_model']}, {g['num_layers']} layers), "
        f"{g['users']} users with {g['length']:,}-event histories, {g['requests']} requests "
        f"(1-20 new events per returning request), each served by the incremental cache and by a "
        f"full re-encode, side by side.",
        "",
        "| K | hits / partial / misses | returning user: user side p50 / p99 (ms), incremental "
        "| full | ratio (median) | whole request p50 / p99 (ms), incremental | full | "
        "first request: user side p50 (ms) | bytes per user | max abs diff |",
        "|---:|---|---|---|---:|---|---|---:|---:|---:|",
    ]
    for key, e in s.items():
        if not key.startswith("K="):
            continue
        frac = e.get("partial_user_fraction_of_full")
        lines.append(
            f"| {key[2:]} | {e['hits']} / {e['partial_hits']} / {e['misses']} "
            f"| {ms(e['partial_inc_user_p50_s'])} / {ms(e['partial_inc_user_p99_s'])} "
            f"| {ms(e['partial_full_user_p50_s'])} / {ms(e['partial_full_user_p99_s'])} "
            f"| {'-' if frac is None else f'{frac:.3f}'} "
            f"| {ms(e['partial_inc_request_p50_s'])} / {ms(e['partial_inc_request_p99_s'])} "
            f"| {ms(e['partial_full_request_p50_s'])} / {ms(e['partial_full_request_p99_s'])} "
            f"| {ms(e['miss_inc_user_p50_s'])} | {_size(e['bytes_per_user'])} "
            f"| {e['max_abs_diff']:.1e} |"
        )
    for path, name in (("inc", "incremental"), ("full", "full re-encode")):
        if f"{path}_cost_ratio_max_vs_1" in s:
            lines.append(
                f"\nReturning request, K={max(g['candidates'])} against K={min(g['candidates'])}"
                f" ({name}): {s[f'{path}_cost_ratio_max_vs_1']:.2f}x."
            )
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], axes) -> None:  # noqa: ANN001 - two matplotlib axes
    """Left: per-request latency of both paths (returning users); right: user side only."""
    rows = [r for r in payload["results"] if r["kind"] == "partial"]
    for ax, part in zip(axes, ("request", "user")):
        for k in payload["config"]["candidates"]:
            sel = [r for r in rows if r["candidates"] == k]
            if part == "user" and k != payload["config"]["candidates"][0]:
                continue
            for path, style in (("inc", "-"), ("full", "--")):
                ys = sorted(r[f"{path}_{part}_s"] * 1e3 for r in sel)
                label = f"{'incremental' if path == 'inc' else 'full'}" + (
                    f" K={k}" if part == "request" else ""
                )
                ax.plot(np.linspace(0, 100, len(ys)), ys, style, label=label)
        ax.set_xlabel("percentile of returning requests")
        ax.set_ylabel(f"{part} ms")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
