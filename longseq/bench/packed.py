"""Suite ``packed``: a batch of ragged requests scored packed (FlexAttention) against padded.

    python -m longseq.bench suite=packed quick=true device=cpu out=benchmarks/results/cpu

History lengths follow the reference data set's distribution with ragged lengths (the
``default`` preset with ``hist_len_dist=lognormal``: median 300 events, sigma 1.0, at least 1,
at most 10,000; the formula of `longseq.datasets.synth`), drawn once with a fixed seed. Two
candidate sets: the preset's 16 per request, and ragged counts (1 to 32, uniform). The STCA
tower of the ``serve`` suite (d=128, 4 heads, 3 layers, FFN depth 2), as the paper's tower and
with the model's recipe (id-match bias, count channel), scores the whole batch (user side and
candidates, inference mode) by three paths with the same weights:

* ``padded sdpa``: histories padded to the longest in the batch, masked; the fastest padded
  kernel (``layout=padded kernel=sdpa``);
* ``jagged pairs``: no padding, attention over the gathered real (target, event) pairs
  (``layout=packed kernel=pairs``, `longseq.model.ops.pairs`);
* ``packed flex``: no padding, each layer's attention one FlexAttention call with a block mask
  from the request offsets (``layout=packed kernel=flex``, `longseq.model.ops.flex`; compiled
  during warm-up, not timed).

(The path names are the result files' labels, kept from before the packed layout was named.)

Reported per path: the batch's median time, per request, the speed-up over padded, and the
largest difference of its outputs from the padded path's. And per request, one request at a
time (batch 1: no padding on any path): p50 and p99 latency over the batch's requests, padded
sdpa against packed flex. On CUDA also the training step (forward + backward) of every path,
its outputs and gradients against the pair form's (``summary["train_recipe_T=16"]``). Plain
torch (no TorchRec).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from longseq.bench.common import BenchArgs, result_payload
from longseq.bench.serve import RECIPE
from longseq.bench.timing import measure_interleaved, sync
from longseq.model.layers import jagged_to_padded, padded_to_jagged
from longseq.model.stca import STCAConfig, STCATower

#: the default preset's lengths with ``hist_len_dist=lognormal`` (`longseq.datasets.synth`)
LENGTHS = {"median": 300, "sigma": 1.0, "min": 1, "cap": 10_000}
PATHS = ("padded sdpa", "jagged pairs", "packed flex")
VOCAB = {"items": 100_000, "categories": 1_000}


def grid(args: BenchArgs) -> dict[str, Any]:
    """Shapes of this mode."""
    if args.tiny:
        return dict(requests=6, d_model=16, num_heads=2, num_layers=2, ffn_depth=1,
                    lengths={**LENGTHS, "median": 20, "cap": 100}, latency_requests=2)  # fmt: skip
    b = 32 if args.quick else 64
    return dict(requests=b, d_model=128, num_heads=4, num_layers=3, ffn_depth=2,
                # on CUDA each new bucketed shape compiles for many seconds: fewer single requests
                lengths=LENGTHS, latency_requests=16 if args.device == "cuda" else b)  # fmt: skip


def draw_lengths(n: int, median: int, sigma: float, lo: int, cap: int, seed: int = 0):
    """``n`` history lengths: ``rint(median * exp(sigma * N(0, 1)))`` clipped to [lo, cap]."""
    rng = np.random.default_rng(seed)
    raw = np.rint(median * np.exp(sigma * rng.standard_normal(n)))
    return torch.from_numpy(np.clip(raw, lo, cap).astype(np.int64))


def _batch(g: dict[str, Any], targets: torch.Tensor, dev, dtype, seed: int = 1):
    lc = g["lengths"]
    lengths = draw_lengths(g["requests"], lc["median"], lc["sigma"], lc["min"], lc["cap"])
    gen = torch.Generator().manual_seed(seed)
    e, n, d = int(lengths.sum()), int(targets.sum()), g["d_model"]
    ids = lambda m: torch.stack([torch.randint(0, VOCAB[k], (m,), generator=gen)  # noqa: E731
                                 for k in ("items", "categories")], -1)  # fmt: skip
    return dict(
        lengths=lengths.to(dev), targets=targets.to(dev),
        x=torch.randn(e, d, generator=gen).to(dev, dtype), hist_ids=ids(e).to(dev),
        t=torch.randn(n, d, generator=gen).to(dev, dtype), tgt_ids=ids(n).to(dev),
    )  # fmt: skip


def _paths(towers: dict[str, STCATower], b: dict[str, Any]) -> dict[str, Any]:
    """One callable per path scoring the whole batch -> ``z [N, d]``."""
    lengths, targets = b["lengths"], b["targets"]
    lm, tm = max(int(lengths.max()), 1), max(int(targets.max()), 1)
    mask = torch.arange(lm, device=lengths.device)[None] < lengths[:, None]

    def padded():
        hist = jagged_to_padded(b["x"], lengths, lm)
        hid = jagged_to_padded(b["hist_ids"], lengths, lm)
        tgt, tid = (
            jagged_to_padded(b["t"], targets, tm),
            jagged_to_padded(b["tgt_ids"], targets, tm),
        )
        return padded_to_jagged(towers["padded sdpa"](hist, mask, tgt, hid, tid), targets)

    def packed(name: str):
        tw = towers[name]
        return lambda: tw.forward_packed(
            b["x"], lengths, b["t"], targets, b["hist_ids"], b["tgt_ids"]
        )

    return {"padded sdpa": padded, "jagged pairs": packed("jagged pairs"),
            "packed flex": packed("packed flex")}  # fmt: skip


def _towers(g: dict[str, Any], recipe: dict[str, bool], dev, dtype) -> dict[str, STCATower]:
    kw = dict(d_model=g["d_model"], num_heads=g["num_heads"], num_layers=g["num_layers"],
              ffn_depth=g["ffn_depth"], **recipe)  # fmt: skip
    torch.manual_seed(0)
    base = STCATower(STCAConfig(kernel="sdpa", **kw))
    towers = {"padded sdpa": base,
              "jagged pairs": STCATower(STCAConfig(kernel="pairs", layout="packed", **kw)),
              "packed flex": STCATower(STCAConfig(kernel="flex", layout="packed", **kw))}  # fmt: skip
    for tw in towers.values():
        tw.load_state_dict(base.state_dict())  # one set of weights: the forms are exact
    return {k: tw.to(dev, dtype).eval() for k, tw in towers.items()}


def _latency(towers, b, reqs: int, dev) -> dict[str, dict[str, float]]:
    """p50 / p99 of scoring one request at a time (batch 1), padded sdpa and packed flex."""
    lengths, targets = b["lengths"].cpu(), b["targets"].cpu()
    e0 = torch.cumsum(lengths, 0) - lengths
    t0 = torch.cumsum(targets, 0) - targets
    out: dict[str, list[float]] = {"padded sdpa": [], "packed flex": []}
    for r in range(reqs):
        es, ts = (
            slice(int(e0[r]), int(e0[r] + lengths[r])),
            slice(int(t0[r]), int(t0[r] + targets[r])),
        )
        one = dict(lengths=b["lengths"][r : r + 1], targets=b["targets"][r : r + 1],
                   x=b["x"][es], hist_ids=b["hist_ids"][es], t=b["t"][ts], tgt_ids=b["tgt_ids"][ts])  # fmt: skip
        fns = _paths(towers, one)
        for name in out:
            fns[name]()  # warm (a new bucketed shape compiles here)
            sync(dev)
            start = time.perf_counter()
            fns[name]()
            sync(dev)
            out[name].append(time.perf_counter() - start)
    return {k: {"p50_s": float(np.percentile(v, 50)), "p99_s": float(np.percentile(v, 99)),
                "mean_s": statistics.fmean(v)} for k, v in out.items()}  # fmt: skip


def _train(g: dict[str, Any], targets: torch.Tensor, dev, dtype) -> dict[str, Any]:
    """The training step (forward + backward, recipe tower): every path's outputs and gradients
    against the pair form's (the exact reference), then the timing. FlexAttention's backward
    needs CUDA in torch 2.13; on CPU the flex tower runs the pair form (a plumbing check only)."""
    towers = {k: tw.train() for k, tw in _towers(g, RECIPE, dev, dtype).items()}
    fns = _paths(towers, _batch(g, targets, dev, dtype))

    def step(name: str):
        towers[name].zero_grad(set_to_none=True)
        z = fns[name]()
        z.float().square().mean().backward()
        return z

    outs, grads = {}, {}
    for name in fns:
        outs[name] = step(name).detach().float()
        grads[name] = [p.grad.float().clone() for p in towers[name].parameters()]
    ref, parity = "jagged pairs", {}
    for name in fns:
        rel = max(((a - b).norm() / b.norm().clamp(min=1e-12)).item()
                  for a, b in zip(grads[name], grads[ref]))  # fmt: skip
        parity[name] = {"max_abs_diff_z": (outs[name] - outs[ref]).abs().max().item(),
                        "max_rel_diff_grad": rel}  # fmt: skip
    timings = measure_interleaved({k: (lambda k=k: step(k)) for k in fns}, 3, 1, dev)
    return {name: {**parity[name], "median_s": t.median_s, "reps_s": t.reps_s,
                   "speedup_vs_padded": timings["padded sdpa"].median_s / t.median_s}
            for name, t in timings.items()}  # fmt: skip


def run(args: BenchArgs) -> dict[str, Any]:
    """Run the suite; return the JSON payload."""
    g = grid(args)
    dev, dtype = args.torch_device, args.torch_dtype
    rng = np.random.default_rng(2)
    sets = {
        "T=16": torch.full((g["requests"],), 16, dtype=torch.int64),
        "K ragged 1-32": torch.from_numpy(rng.integers(1, 33, g["requests"])),
    }
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for variant, recipe in (("paper", {}), ("recipe", RECIPE)):
        towers = _towers(g, recipe, dev, dtype)
        for cand, targets in sets.items():
            b = _batch(g, targets, dev, dtype)
            fns = _paths(towers, b)
            with torch.inference_mode():
                outs = {k: fn() for k, fn in fns.items()}  # compiles FlexAttention once
                timings = measure_interleaved(fns, args.reps, args.warmup, dev)
            base = timings["padded sdpa"].median_s
            lengths = b["lengths"].cpu()
            shape = {"events": int(lengths.sum()), "padded_events": len(lengths) * int(lengths.max()),
                     "targets": int(targets.sum()), "padded_targets": len(targets) * int(targets.max())}  # fmt: skip
            for path, t in timings.items():
                diff = (outs[path] - outs["padded sdpa"]).abs().max().item()
                results.append({"variant": variant, "candidates": cand, "path": path, **shape,
                                "median_s": t.median_s, "reps_s": t.reps_s,
                                "per_request_s": t.median_s / g["requests"],
                                "speedup_vs_padded": base / t.median_s, "max_abs_diff": diff})  # fmt: skip
            summary[f"{variant}, {cand}"] = {
                "packed_speedup": base / timings["packed flex"].median_s,
                "pairs_speedup": base / timings["jagged pairs"].median_s,
                "padding_share": 1 - shape["events"] / shape["padded_events"],
            }
        if variant == "recipe":
            with torch.inference_mode():
                b = _batch(g, sets["T=16"], dev, dtype)
                summary["latency_recipe_T=16"] = _latency(towers, b, g["latency_requests"], dev)
    if dev.type == "cuda" or args.tiny:  # the training path (FlexAttention backward: CUDA only)
        summary["train_recipe_T=16"] = _train(g, sets["T=16"], dev, dtype)
    lens = draw_lengths(
        g["requests"], *(g["lengths"][k] for k in ("median", "sigma", "min", "cap"))
    )
    return result_payload(
        args,
        "packed",
        config={
            **g,
            "paths": list(PATHS),
            "dtype": args.resolved_dtype,
            "recipe": RECIPE,
            "candidate_sets": list(sets),
            "history_lengths": lens.tolist(),
        },  # fmt: skip
        results=results,
        summary=summary,
        notes=[
            "one batch of ragged requests, whole forward (user side + candidates), inference mode",
            "padded sdpa = histories padded to the batch's longest, masked (the best padded form)",
            "jagged pairs = packed, attention over gathered (target, event) pairs",
            "packed flex = packed, one FlexAttention call per layer (compiled in warm-up)",
            "latency = one request at a time, p50/p99 over the batch's requests (recipe, T=16)",
            "train = forward + backward of the recipe tower (T=16), outputs and gradients against "
            "the pair form's; measured on CUDA only (FlexAttention has no CPU backward in torch "
            "2.13; a tiny CPU run checks the plumbing with the flex tower on its pair fallback)",
        ],
    )


def render(p: dict[str, Any]) -> str:
    """Markdown: one row per (variant, candidates, path), then the per-request latency."""
    c = p["config"]
    lens = sorted(c["history_lengths"])
    head = (f"{c['requests']} requests, history lengths median {lens[len(lens) // 2]}, "
            f"max {lens[-1]} (lognormal, median {c['lengths']['median']}, sigma "
            f"{c['lengths']['sigma']}, cap {c['lengths']['cap']}); d={c['d_model']}, "
            f"{c['num_layers']} layers.")  # fmt: skip
    lines = ["| tower | candidates | path | events (padded) | ms per batch | ms per request "
             "| vs padded | max abs diff |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in p["results"]:
        lines.append(
            f"| {r['variant']} | {r['candidates']} | {r['path']} | {r['events']:,} "
            f"({r['padded_events']:,}) | {r['median_s'] * 1e3:.1f} | {r['per_request_s'] * 1e3:.2f} "
            f"| **{r['speedup_vs_padded']:.2f}x** | {r['max_abs_diff']:.1e} |"
        )
    lat = p["summary"].get("latency_recipe_T=16", {})
    if lat:
        lines += ["", "One request at a time (recipe, T=16): "
                  + "; ".join(f"{k} p50 {v['p50_s'] * 1e3:.2f} ms, p99 {v['p99_s'] * 1e3:.2f} ms"
                              for k, v in lat.items()) + "."]  # fmt: skip
    train = p["summary"].get("train_recipe_T=16")
    if train:
        lines += ["", "Training step (forward + backward, recipe, T=16):", "",
                  "| path | ms | vs padded | max abs diff z | max rel diff grad |",
                  "|---|---|---|---|---|"]  # fmt: skip
        lines += [f"| {k} | {v['median_s'] * 1e3:.1f} | {v['speedup_vs_padded']:.2f}x "
                  f"| {v['max_abs_diff_z']:.1e} | {v['max_rel_diff_grad']:.1e} |"
                  for k, v in train.items()]  # fmt: skip
    return head + "\n\n" + "\n".join(lines)


def plot(p: dict[str, Any], axes: Any) -> None:
    """Milliseconds per batch per path, and the speed-up over padded, per (tower, candidates)."""
    ax_t, ax_s = axes
    groups = list(dict.fromkeys(f"{r['variant']}\n{r['candidates']}" for r in p["results"]))
    width = 0.8 / len(PATHS)
    for i, path in enumerate(PATHS):
        rows = [r for r in p["results"] if r["path"] == path]
        xs = [groups.index(f"{r['variant']}\n{r['candidates']}") + i * width for r in rows]
        ax_t.bar(xs, [r["median_s"] * 1e3 for r in rows], width, label=path)
        ax_s.bar(xs, [r["speedup_vs_padded"] for r in rows], width, label=path)
    for ax, title in ((ax_t, "ms per batch"), (ax_s, "speed-up over padded sdpa")):
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(groups))], groups, fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=7)
    ax_s.axhline(1.0, color="grey", lw=0.8)
