"""Suite ``serve``: scoring one request with a long history and K candidates (inference mode).

The STCA tower of the ``default`` experiment (d=128, 4 heads, 3 layers, FFN depth 2) scores one
request: the user side (``encode_history``: the per-layer history FFN + LayerNorm, done once per
request) and the whole tower for K candidates, both attention forms. Reported: user-side time,
time per K, the marginal cost per extra candidate (least-squares slope of time against K),
candidates/s, and cost(K_max) / cost(1). The tower only: embedding lookup, feature fetch and
heads are not included. Plain torch only.
"""

from __future__ import annotations

from typing import Any

import torch

from longseq.bench.common import BenchArgs, result_payload
from longseq.bench.timing import measure_interleaved
from longseq.model.stca import STCAConfig, STCATower

FORMS = ("absorbed", "kv", "sdpa")


def grid(args: BenchArgs) -> dict[str, Any]:
    """Shapes of this mode."""
    if args.tiny:
        return dict(length=64, candidates=[1, 4, 16], d_model=16, num_heads=2, num_layers=2,
                    ffn_depth=1)  # fmt: skip
    return dict(length=10240, candidates=[1, 16, 128, 512],
                d_model=128, num_heads=4, num_layers=3, ffn_depth=2)  # fmt: skip


def _slope(xs: list[int], ys: list[float]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of ``ys`` against ``xs``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def run(args: BenchArgs) -> dict[str, Any]:
    """Run the suite; return the JSON payload."""
    g = grid(args)
    dev, dtype = args.torch_device, args.torch_dtype
    d, length, ks = g["d_model"], g["length"], g["candidates"]
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    torch.manual_seed(0)
    hist = torch.randn(1, length, d, device=dev, dtype=dtype)
    mask = torch.ones(1, length, dtype=torch.bool, device=dev)
    cands = torch.randn(1, max(ks), d, device=dev, dtype=dtype)
    for form in FORMS:
        cfg = STCAConfig(d_model=d, num_heads=g["num_heads"], num_layers=g["num_layers"],
                         ffn_depth=g["ffn_depth"], attention=form)  # fmt: skip
        torch.manual_seed(0)
        tower = STCATower(cfg).to(dev, dtype).eval()
        fns: dict[str, Any] = {"user_side": lambda tw=tower: tw.encode_history(hist)}
        for k in ks:
            fns[f"K={k}"] = lambda tw=tower, k=k: tw(hist, mask, cands[:, :k])
        with torch.inference_mode():
            timings = measure_interleaved(fns, args.reps, args.warmup, dev)
        user = timings.pop("user_side")
        results.append({"form": form, "part": "user_side", "length": length,
                        "median_s": user.median_s, "reps_s": user.reps_s})  # fmt: skip
        totals = []
        for k in ks:
            tm = timings[f"K={k}"]
            totals.append(tm.median_s)
            results.append({"form": form, "part": "request", "length": length, "candidates": k,
                            "median_s": tm.median_s, "reps_s": tm.reps_s,
                            "candidates_per_s": k / tm.median_s})  # fmt: skip
        slope, intercept = _slope(ks, totals)
        summary[form] = {
            "user_side_s": user.median_s,
            "marginal_s_per_candidate": slope,
            "intercept_s": intercept,
            "cost_ratio_max_vs_1": totals[-1] / totals[0],
            "max_candidates": ks[-1],
            "user_side_fraction_at_1": user.median_s / totals[0],
            "candidates_per_s_at_max": ks[-1] / totals[-1],
        }
    return result_payload(
        args,
        "serve",
        config={**g, "forms": list(FORMS), "dtype": args.resolved_dtype},
        results=results,
        summary=summary,
        notes=[
            "inference mode, one request (batch 1), every history slot valid",
            "user_side = STCATower.encode_history (history FFN + LN of every layer); in the kv "
            "form the K/V projections are user-side too but run inside the attention call",
            "marginal_s_per_candidate = least-squares slope of request time against K",
            "tower only: no embedding lookup, feature fetch or heads",
        ],
    )
