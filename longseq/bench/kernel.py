"""Suite ``kernel``: the STCA attention step alone against ceilings measured in the same process.

Variants (all padded, every history slot valid, inference mode):

* ``step_kv``: ``softmax(q Kᵀ/√d_h) V`` with precomputed per-request ``K, V`` (the einsum +
  masked softmax of the ``kv`` kernel, `longseq.model.ops.padded`); ``step_kv_sdpa``: the same
  through ``scaled_dot_product_attention`` (torch's fused kernel); ``step_absorbed``: scores
  ``u X̃ᵀ`` and ``α X̃`` of the ``absorbed`` kernel.
* ``module_kv`` / ``module_absorbed``: the whole `TargetAttention` forward (projections included).
* ``module_jagged``: the same function in the packed layout (the ``pairs`` kernel,
  `longseq.model.ops.pairs`, on the flat events and targets; pairs built in the call),
  projections included.

Bytes and FLOPs are counted analytically, from the shapes: the compulsory traffic is the
per-request ``K, V`` (``2·L·d·b``) or ``X̃`` (``L·d·b``) read once; FLOPs ``4·L·d`` per target for
``kv`` and ``4·L·d·h`` for ``absorbed``. Achieved rates are divided by a memory-copy ceiling
(``dst.copy_(src)`` of a tensor far larger than the caches) and a square-matmul ceiling, both
measured here with the same threads and dtype. Histories are all full here, so the jagged
layout has no padding to save: ``module_jagged`` against ``module_kv`` is the price of its pair
gather.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from longseq.bench.common import BenchArgs, result_payload
from longseq.bench.timing import measure, measure_interleaved
from longseq.model.attention import TargetAttention
from longseq.model.ops.dispatch import packed_history
from longseq.model.ops.history import PaddedHistory
from longseq.model.ops.kernels import Kernel
from longseq.model.ops.padded import mask_scores


def grid(args: BenchArgs) -> dict[str, Any]:
    """Shapes and ceiling sizes of this mode."""
    cuda = args.device == "cuda"
    if args.tiny:
        return dict(batch=1, lengths=[64, 128], targets=[1, 4], d_model=16, num_heads=2,
                    copy_mib=4, matmul_n=256)  # fmt: skip
    return dict(batch=4 if args.quick else 8, lengths=[2048, 10240], targets=[1, 16],
                d_model=128, num_heads=4, copy_mib=1024 if cuda else 256,
                matmul_n=8192 if cuda else 2048)  # fmt: skip


def _copy_timings(n_el: int, args: BenchArgs, dev: torch.device, dtype: torch.dtype):
    """``dst.copy_(src)`` into a preallocated tensor, and ``clone()`` (which also pays for
    fresh pages on CPU) of an ``n_el``-element tensor."""
    src = torch.ones(n_el, device=dev, dtype=dtype)
    dst = torch.empty_like(src)
    copy = measure(lambda: dst.copy_(src), args.reps, args.warmup, dev)
    clone = measure(lambda: src.clone(), args.reps, args.warmup, dev)
    return copy, clone


def ceilings(args: BenchArgs, g: dict[str, Any]) -> dict[str, Any]:
    """Measured memory-copy bandwidth and matmul throughput (same dtype, device, threads)."""
    dev, dtype = args.torch_device, args.torch_dtype
    n_el = g["copy_mib"] * 2**20 // torch.finfo(dtype).bits * 8
    copy, clone = _copy_timings(n_el, args, dev, dtype)
    n = g["matmul_n"]
    a = torch.randn(n, n, device=dev, dtype=dtype)
    bm = torch.randn(n, n, device=dev, dtype=dtype)
    mm = measure(lambda: a @ bm, args.reps, args.warmup, dev)
    nbytes = n_el * torch.finfo(dtype).bits // 8
    return {
        "copy": {"bytes": 2 * nbytes, "median_s": copy.median_s, "reps_s": copy.reps_s,
                 "bytes_per_s": 2 * nbytes / copy.median_s},
        "clone": {"bytes": 2 * nbytes, "median_s": clone.median_s, "reps_s": clone.reps_s,
                  "bytes_per_s": 2 * nbytes / clone.median_s},
        "matmul": {"n": n, "flops": 2 * n**3, "median_s": mm.median_s, "reps_s": mm.reps_s,
                   "flops_per_s": 2 * n**3 / mm.median_s},
    }  # fmt: skip


def counts(variant: str, b: int, t: int, length: int, d: int, h: int, eb: int) -> tuple[int, int]:
    """Analytic (bytes, FLOPs) of one call: compulsory traffic, multiply-adds as 2 FLOPs."""
    hist = b * length * d * eb
    if variant in ("step_kv", "step_kv_sdpa"):
        return 2 * hist, 4 * b * t * length * d
    if variant == "step_absorbed":
        return hist, 4 * b * t * length * d * h
    if variant in ("module_kv", "module_jagged"):  # read X̃, write K and V, read them back
        return 5 * hist, 4 * b * length * d * d + 4 * b * t * length * d + 4 * b * t * d * d
    if variant == "module_absorbed":
        return hist, 4 * b * t * length * d * h + 8 * b * t * d * d
    raise ValueError(variant)


def _variants(attn_kv: TargetAttention, attn_abs: TargetAttention, q, x, mask) -> dict[str, Any]:
    b, t, d = q.shape
    h, dh = attn_kv.h, attn_kv.dh
    scale = 1.0 / math.sqrt(dh)
    qh = attn_kv.w_q(q).view(b, t, h, dh)
    k = attn_kv.w_k(x).view(b, -1, h, dh)
    v = attn_kv.w_v(x).view(b, -1, h, dh)
    q_s, k_s, v_s = (z.transpose(1, 2).contiguous() for z in (qh, k, v))  # [B,h,*,dh]
    sdpa_mask = mask[:, None, None, :]
    u = torch.einsum("bthe,hed->bthd", qh, attn_abs.w_k.weight.view(h, dh, d))

    def step_kv() -> torch.Tensor:
        a = mask_scores(torch.einsum("bthe,blhe->bhtl", qh, k) * scale, mask)
        return torch.einsum("bhtl,blhe->bthe", a, v)

    def step_kv_sdpa() -> torch.Tensor:
        return F.scaled_dot_product_attention(q_s, k_s, v_s, attn_mask=sdpa_mask)

    def step_absorbed() -> torch.Tensor:
        a = mask_scores(torch.einsum("bthd,bld->bhtl", u, x) * scale, mask)
        return torch.einsum("bhtl,bld->bthd", a, x)

    hist_lengths = torch.full((b,), x.shape[1], dtype=torch.long, device=x.device)
    num_targets = torch.full((b,), t, dtype=torch.long, device=x.device)
    x_flat, q_flat = x.reshape(-1, d), q.reshape(-1, d)
    history = PaddedHistory(mask)

    def module_pairs() -> torch.Tensor:
        kernel, packed = packed_history(Kernel.PAIRS, hist_lengths, num_targets, q_flat)
        return attn_kv(q_flat, x_flat, packed, kernel)

    return {
        "step_kv": step_kv,
        "step_kv_sdpa": step_kv_sdpa,
        "step_absorbed": step_absorbed,
        "module_kv": lambda: attn_kv(q, x, history),
        "module_absorbed": lambda: attn_abs(q, x, history),
        "module_jagged": module_pairs,
    }


def run(args: BenchArgs) -> dict[str, Any]:
    """Run the suite; return the JSON payload."""
    g = grid(args)
    dev, dtype = args.torch_device, args.torch_dtype
    eb = torch.finfo(dtype).bits // 8
    d, h, b = g["d_model"], g["num_heads"], g["batch"]
    torch.manual_seed(0)
    attn_kv = TargetAttention(d, h, "kv").to(dev, dtype).eval()
    attn_abs = TargetAttention(d, h, "absorbed").to(dev, dtype).eval()
    attn_abs.load_state_dict(attn_kv.state_dict())
    results: list[dict[str, Any]] = []
    with torch.inference_mode():
        ceil = ceilings(args, g)
        bw, fl = ceil["copy"]["bytes_per_s"], ceil["matmul"]["flops_per_s"]
        for length in g["lengths"]:
            x = torch.randn(b, length, d, device=dev, dtype=dtype)
            mask = torch.ones(b, length, dtype=torch.bool, device=dev)
            for t in g["targets"]:
                q = torch.randn(b, t, d, device=dev, dtype=dtype)
                fns = _variants(attn_kv, attn_abs, q, x, mask)
                timings = measure_interleaved(fns, args.reps, args.warmup, dev)
                for name, tm in timings.items():
                    nbytes, flops = counts(name, b, t, length, d, h, eb)
                    results.append({
                        "variant": name, "length": length, "targets": t, "batch": b,
                        "median_s": tm.median_s, "reps_s": tm.reps_s,
                        "bytes": nbytes, "flops": flops,
                        "bytes_per_s": nbytes / tm.median_s, "flops_per_s": flops / tm.median_s,
                        "fraction_of_copy_bw": nbytes / tm.median_s / bw,
                        "fraction_of_matmul": flops / tm.median_s / fl,
                        "bound_s": nbytes / bw,
                        "targets_per_s": b * t / tm.median_s,
                    })  # fmt: skip
    return result_payload(
        args,
        "kernel",
        config={**g, "dtype": args.resolved_dtype, "element_bytes": eb},
        results=results,
        summary=summarize(results, ceil),
        notes=[
            "bytes = compulsory traffic (K,V or X̃ read once per request); the unfused einsum "
            "forms also write and re-read the L-long scores, so their real traffic is higher",
            "fraction_of_copy_bw = achieved bytes/s over the dst.copy_(src) bandwidth measured "
            "in this process (2 x tensor bytes per copy); fraction_of_matmul likewise against "
            "a square matmul",
            "module_jagged: the packed layout's pairs kernel (no padding); with full histories "
            "it does the same work as module_kv plus a gather of K and V per (target, event) pair",
        ],
        ceilings=ceil,
    )


def summarize(results: list[dict[str, Any]], ceil: dict[str, Any]) -> dict[str, Any]:
    """Best fraction of the copy ceiling per (variant, length) at the largest target count."""
    ok = [r for r in results if "median_s" in r]
    out: dict[str, Any] = {
        "copy_bytes_per_s": ceil["copy"]["bytes_per_s"],
        "matmul_flops_per_s": ceil["matmul"]["flops_per_s"],
        "fraction_of_copy_bw": {},
        "fraction_of_matmul": {},
    }
    for r in ok:
        key = f"{r['variant']}@L={r['length']},T={r['targets']}"
        out["fraction_of_copy_bw"][key] = r["fraction_of_copy_bw"]
        out["fraction_of_matmul"][key] = r["fraction_of_matmul"]
    steps = [r for r in ok if r["variant"].startswith("step_")]
    if steps:
        longest = max(r["length"] for r in steps)
        best = max(
            (r for r in steps if r["length"] == longest), key=lambda r: r["fraction_of_copy_bw"]
        )
        out["best_step_at_longest"] = {
            k: best[k] for k in ("variant", "length", "targets", "fraction_of_copy_bw")
        }
    return out
