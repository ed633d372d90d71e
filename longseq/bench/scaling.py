"""Suite ``scaling``: forward+backward cost per target against history length.

STCA, the self-attention `TransformerTower` and `DINTower` at the same width, heads and depth, on
one request per step with one target (the pointwise per-target cost; request-level sharing is
measured by the ``rlb`` suite). The towers are timed round-robin at each length. Memory: the bytes
autograd saves for backward (measured with saved-tensor hooks, every device) and, on CUDA, the
peak allocated bytes. Plain torch only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from longseq.bench.common import BenchArgs, result_payload
from longseq.bench.timing import (
    cuda_peak_bytes,
    fit_exponent,
    measure_interleaved,
    saved_activation_bytes,
    time_once,
)
from longseq.model.towers import TOWERS as REGISTRY

TOWERS = ("stca", "transformer", "din")


def grid(args: BenchArgs) -> dict[str, Any]:
    """Shapes of this mode."""
    if args.tiny:
        return dict(lengths=[16, 32], d_model=16, num_heads=2, num_layers=1, batch=1, targets=1,
                    max_rep_s=5.0)  # fmt: skip
    lengths = [512, 1024, 2048, 4096, 8192] + ([] if args.quick else [10240, 16384])
    return dict(lengths=lengths, d_model=128, num_heads=4, num_layers=2, batch=1, targets=1,
                max_rep_s=10.0 if args.quick else 60.0)  # fmt: skip


def build_tower(name: str, d: int, heads: int, layers: int) -> nn.Module:
    """One of `TOWERS`, built from its registration (`longseq.model.model.TOWERS`) with its
    config class's defaults (STCA: the paper's tower) and the shared width/heads/depth."""
    if name not in TOWERS:
        raise ValueError(f"unknown tower {name!r}: choose one of {TOWERS}")
    shared = dict(d_model=d, num_heads=heads, num_layers=layers)
    over = dict(d_model=d, att_hidden=[64, 32]) if name == "din" else shared
    entry = REGISTRY[name]
    return entry.module(entry.config_type(**over))


def _step(tower: nn.Module, hist, mask, tgt):
    def run() -> None:
        tower.zero_grad(set_to_none=True)
        tower(hist, mask, tgt).float().sum().backward()

    return run


def run(args: BenchArgs) -> dict[str, Any]:
    """Run the suite; return the JSON payload."""
    g = grid(args)
    dev, dtype = args.torch_device, args.torch_dtype
    b, t, d = g["batch"], g["targets"], g["d_model"]
    torch.manual_seed(0)
    towers = {n: build_tower(n, d, g["num_heads"], g["num_layers"]).to(dev, dtype) for n in TOWERS}
    results: list[dict[str, Any]] = []
    dropped: dict[str, str] = {}
    for length in g["lengths"]:
        hist = torch.randn(b, length, d, device=dev, dtype=dtype)
        mask = torch.ones(b, length, dtype=torch.bool, device=dev)
        tgt = torch.randn(b, t, d, device=dev, dtype=dtype)
        fns = {}
        for name, tower in towers.items():
            if name in dropped:
                results.append({"tower": name, "length": length, "skipped": dropped[name]})
                continue
            fn = _step(tower, hist, mask, tgt)
            try:
                once = time_once(fn, dev)  # also a warm-up
            except torch.OutOfMemoryError:
                dropped[name] = f"out of memory at length {length}"
                results.append({"tower": name, "length": length, "skipped": dropped[name]})
                continue
            if once > g["max_rep_s"]:  # measured here; longer histories are skipped
                dropped[name] = f"one step took {once:.1f}s > {g['max_rep_s']}s at {length}"
            fns[name] = fn
        timings = measure_interleaved(fns, args.reps, max(args.warmup - 1, 0), dev)
        for name, timing in timings.items():
            tower = towers[name]
            params = list(tower.parameters())
            fwd = lambda tw=tower, h=hist, m=mask, t_=tgt: tw(h, m, t_)  # noqa: E731
            saved = saved_activation_bytes(fwd, exclude=params)
            peak = cuda_peak_bytes(_step(tower, hist, mask, tgt), dev)
            results.append(
                {
                    "tower": name,
                    "length": length,
                    "median_s": timing.median_s,
                    "reps_s": timing.reps_s,
                    "per_target_s": timing.median_s / (b * t),
                    "per_target_min_s": timing.min_s / (b * t),
                    "saved_activation_bytes_per_target": saved / (b * t),
                    "cuda_peak_bytes_per_target": None if peak is None else peak / (b * t),
                }
            )
    return result_payload(
        args,
        "scaling",
        config={**g, "towers": list(TOWERS), "dtype": args.resolved_dtype},
        results=results,
        summary=summarize(results),
        notes=[
            "cost = one optimizer-free training step (forward + backward) of the tower alone, "
            "one request with one target per step, per target",
            "memory_method: saved_activation_bytes = distinct storages autograd saves for "
            "backward (saved-tensor hooks; parameters excluded), measured on every device; "
            "cuda_peak_bytes = torch.cuda.max_memory_allocated above the start (CUDA only, "
            "null on CPU)",
            "the Transformer uses scaled_dot_product_attention; its backend (flash/"
            "memory-efficient/math) decides whether the L x L scores are saved",
        ],
        memory_method="saved_activation_bytes (all devices); cuda_peak_bytes (CUDA only)",
    )


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Fitted log-log exponents per tower and the Transformer/STCA and DIN/STCA cost ratios."""
    ok = [r for r in results if "median_s" in r]
    by = {n: {r["length"]: r["per_target_s"] for r in ok if r["tower"] == n} for n in TOWERS}
    mins = {n: {r["length"]: r["per_target_min_s"] for r in ok if r["tower"] == n} for n in TOWERS}
    out: dict[str, Any] = {"exponent": {}, "exponent_upper_half": {}, "exponent_of_minima": {}}
    for name, pts in by.items():
        xs = sorted(pts)
        out["exponent"][name] = fit_exponent(xs, [pts[x] for x in xs])
        upper = xs[len(xs) // 2 :] if len(xs) >= 4 else xs
        out["exponent_upper_half"][name] = fit_exponent(upper, [pts[x] for x in upper])
        out["exponent_of_minima"][name] = fit_exponent(xs, [mins[name][x] for x in xs])
    common = sorted(set(by["stca"]) & set(by["transformer"]))
    out["transformer_over_stca"] = {str(x): by["transformer"][x] / by["stca"][x] for x in common}
    common_din = sorted(set(by["stca"]) & set(by["din"]))
    out["din_over_stca"] = {str(x): by["din"][x] / by["stca"][x] for x in common_din}
    out["max_length"] = common[-1] if common else None
    return out
