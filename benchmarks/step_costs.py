"""Side-by-side costs of two step-time fixes of the long-history work (docs/benchmarks.md).

    .venv/bin/python benchmarks/step_costs.py [out=benchmarks/results/cpu/step_costs.json] [reps=5]

1. SDPA with an all-true boolean mask (what `TargetAttention` used to pass for fixed-length
   histories) against no mask (what it passes now), B=4 requests, T=16 targets, L=8192, d=64,
   4 heads, forward only.
2. DIN over the last 50 events, computed as before (the pair MLP over all 1,024 events, then
   masked: ``last_n=0`` on the ``most_recent`` mask) against now (the window cut first),
   B=32, T=16, L=1024, d=64, forward + backward.

Each pair is timed alternately, ``reps`` times, one intra-op thread; the JSON holds every
repetition, the medians and the median of the per-repetition ratios.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from longseq.model.baselines.din import DINConfig, DINTower, most_recent


def _time(fn, inner: int = 3) -> float:
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def sdpa_pair() -> tuple:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 4, 16, 16, generator=g)
    k = torch.randn(4, 4, 8192, 16, generator=g)
    v = torch.randn(4, 4, 8192, 16, generator=g)
    mask = torch.ones(4, 1, 1, 8192, dtype=torch.bool)
    with_mask = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    without = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    return with_mask, without


def din_pair() -> tuple:
    torch.manual_seed(0)
    b, L, t, d = 32, 1024, 16, 64
    hist, tgt = torch.randn(b, L, d), torch.randn(b, t, d)
    mask = torch.ones(b, L, dtype=torch.bool)
    cut = DINTower(DINConfig(d_model=d, last_n=50))
    full = DINTower(DINConfig(d_model=d, last_n=0))
    full.load_state_dict(cut.state_dict())
    old_mask = most_recent(mask, 50)

    def before() -> None:
        full(hist, old_mask, tgt).sum().backward()

    def after() -> None:
        cut(hist, mask, tgt).sum().backward()

    return before, after


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    reps = int(args.get("reps", 5))
    out = Path(args.get("out", "benchmarks/results/cpu/step_costs.json"))
    torch.set_num_threads(1)
    result = {}
    for name, (before, after) in (
        ("sdpa_mask_L8192", sdpa_pair()),
        ("din_last50_L1024", din_pair()),
    ):
        before(), after()  # warm-up
        b, a = [], []
        for _ in range(reps):
            b.append(_time(before))
            a.append(_time(after))
        result[name] = {
            "before_s": b,
            "after_s": a,
            "before_median_s": statistics.median(b),
            "after_median_s": statistics.median(a),
            "speedup_median": statistics.median(x / y for x, y in zip(b, a)),
        }
        print(f"{name}: before {statistics.median(b):.4f} s, after {statistics.median(a):.4f} s, "
              f"speedup x{result[name]['speedup_median']:.2f}")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"torch": torch.__version__, "reps": reps, **result}, indent=2) + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
