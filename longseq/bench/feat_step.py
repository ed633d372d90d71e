"""Suite ``feat_step``: what the side features and the RankMixer head cost in the training step.

At the long1k shapes (``experiment=long1k``: 32 requests per step, 16 targets each, 1,024-event
histories, ``model: small``) the trainer's step (forward, loss, backward with the fused sparse
update, clipped AdamW; `longseq.bench.feat_step_worker`) of four variants, timed round-robin in
one process on the same requests:

* ``none_mlp``: no side features, MLP head (the reference ``a``);
* ``feat_mlp``: 10 user/context + 5 candidate features (`longseq.bench.feat_data`), MLP head
  (``b``);
* ``feat_rankmixer``: the same features, RankMixer head (``c``);
* ``none_rankmixer``: no features, RankMixer head;
* ``none_mlp_control``: a second copy of ``none_mlp``: its "share" is this run's noise floor.

Reported: the share of the step the feature path takes, ``(b - a) / b``, and the feature path
with RankMixer, ``(c - a) / c`` (target: at most 15 %), from the medians and as the median of
the per-round shares (each round times every variant once); RankMixer against the MLP head
without features. Collation with and without the features is timed apart (it runs in the data
pipeline, outside the step).

    python -m longseq.bench suite=feat_step quick=true device=cpu out=benchmarks/results/cpu
"""

from __future__ import annotations

import statistics
from typing import Any

from longseq.bench.common import BenchArgs, result_payload

#: acceptance: the feature path and RankMixer cost at most this share of the step
SHARE_TARGET = 0.15
#: share name -> (variant measured, reference variant)
SHARES = {
    "features_mlp": ("feat_mlp", "none_mlp"),
    "features_rankmixer": ("feat_rankmixer", "none_mlp"),
    "rankmixer_no_features": ("none_rankmixer", "none_mlp"),
    "control": ("none_mlp_control", "none_mlp"),
}


def grid(args: BenchArgs) -> dict[str, Any]:
    """Shapes of this mode (``requests=0``: long1k's ``data.batch_size``)."""
    if args.tiny:
        return dict(length=32, targets=4, requests=2, reps=args.reps)
    # steps of ~0.4 s on a shared 2-core CPU vary up to 2x: at least 15 rounds
    return dict(length=1024, targets=16, requests=0, reps=max(args.reps, 15))


def shares(timings: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per `SHARES` entry: ``(x - ref) / x`` from the medians and the median of the per-round
    shares, and ``x / ref``."""
    out = {}
    for name, (x, ref) in SHARES.items():
        mx, mr = timings[x]["median_s"], timings[ref]["median_s"]
        rounds = [(a - b) / a for a, b in zip(timings[x]["reps_s"], timings[ref]["reps_s"])]
        lx, lr = min(timings[x]["reps_s"]), min(timings[ref]["reps_s"])
        out[name] = {
            "share": (mx - mr) / mx,
            "share_per_round_median": statistics.median(rounds),
            "share_of_minima": (lx - lr) / lx,
            "ratio": mx / mr,
        }
    return out


def forward_shares(payload: dict[str, Any]) -> dict[str, float]:
    """Per `SHARES` entry: ``(x - ref) / x`` of the forward-only totals (``part=forward``)."""
    fw = {r["variant"]: r["total_ms"] for r in payload["results"] if r["part"] == "forward"}
    return {k: (fw[x] - fw[r]) / fw[x] for k, (x, r) in SHARES.items() if x in fw and r in fw}


def run(args: BenchArgs) -> dict[str, Any]:
    """Run the suite on one rank (gloo on CPU, NCCL on CUDA); return the JSON payload."""
    from longseq.bench import feat_step_worker
    from longseq.parallel.spawn import run_ranks

    g = grid(args)
    spec = {**g, "device": args.device, "warmup": args.warmup}
    backend = "nccl" if args.device == "cuda" else "gloo"
    out = run_ranks(1, feat_step_worker.worker, spec, backend=backend, timeout=1800)[0]
    tm = out["timings"]
    results = [
        {"part": "step", "variant": name, "features": fs, "head": head,
         "median_s": tm[name]["median_s"], "reps_s": tm[name]["reps_s"],
         "dense_params": out["dense_params"][name]}
        for name, (fs, head) in feat_step_worker.VARIANTS.items()
    ]  # fmt: skip
    sh = shares(tm)
    results += [{"part": "share", "name": k, **v} for k, v in sh.items()]
    results += [{"part": "forward", "variant": k, **{f"{p}_ms": x for p, x in v.items()}}
                for k, v in out["forward_ms"].items()]  # fmt: skip
    cs = out["collate_s"]
    results.append({"part": "collate", "none_s": cs["none"], "features_s": cs["user+cand"]})
    shape = (f"{out['requests']} requests x {out['targets']} targets, {out['length']}-event "
             "histories")  # fmt: skip
    notes = [
        f"1 rank ({backend}), {out['threads']} intra-op thread(s); {shape}; the step of "
        "longseq.train: sharded LongSeqModel (experiment=long1k, default sharding), fused "
        "row-wise Adagrad in backward, AdamW with clipping (build_optimizer); no pipeline",
        f"timed round-robin, {g['reps']} rounds after {args.warmup} warm-up round(s); share = "
        "(variant - none_mlp) / variant from the medians; share_per_round_median: the median of "
        "the same ratio within each round; share_of_minima: from each variant's fastest round "
        "(the least disturbed on a shared machine)",
        "features: 10 user/context (5 id, 2 multi_hot of 8 ids, 3 dense) + 5 candidate (2 id, 1 "
        "multi_hot of 3 ids, 2 dense); their 9 tables join the one EmbeddingCollection lookup",
        "collate: the median of 5 collations of the step's requests, outside the step (the data "
        "pipeline)",
        "forward by part: the same rounds again, forward only under no_grad, timed by forward "
        "hooks on the model's modules (CPU only); backward is not split",
    ]
    summary = {k: v["share"] for k, v in sh.items()}
    summary["share_target"] = SHARE_TARGET
    summary["met"] = sh["features_rankmixer"]["share"] <= SHARE_TARGET
    return result_payload(args, "feat_step", config={**g, **{k: out[k] for k in (
        "requests", "model", "sharding")}}, results=results, summary=summary, notes=notes)  # fmt: skip


def render(payload: dict[str, Any]) -> str:
    """The step times, the shares and the acceptance line."""
    steps = [r for r in payload["results"] if r["part"] == "step"]
    ref = next(r["median_s"] for r in steps if r["variant"] == "none_mlp")
    lines = ["| variant | features | head | step ms (median) | / none_mlp | dense params |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in steps:
        lines.append(f"| {r['variant']} | {r['features']} | {r['head']} | "
                     f"{r['median_s'] * 1e3:.1f} | {r['median_s'] / ref:.3f} | "
                     f"{r['dense_params']:,} |")  # fmt: skip
    lines += ["", "| share of the step | from medians | median of per-round shares "
              "| from the fastest rounds |", "|---|---|---|---|"]  # fmt: skip
    what = {"features_mlp": "feature path, MLP head: (b - a) / b",
            "features_rankmixer": "feature path + RankMixer: (c - a) / c",
            "rankmixer_no_features": "RankMixer instead of MLP, no features",
            "control": "control: a second none_mlp model (the noise floor)"}  # fmt: skip
    for r in (r for r in payload["results"] if r["part"] == "share"):
        lines.append(f"| {what[r['name']]} | **{r['share']:.1%}** | "
                     f"{r['share_per_round_median']:.1%} | {r['share_of_minima']:.1%} |")  # fmt: skip
    fw = [r for r in payload["results"] if r["part"] == "forward"]
    if fw:
        parts = ("lookup", "tower", "head", "other", "total")
        lines += ["", "Forward only, by part (median ms; forward hooks, no grad; `other`: tokens, "
                  "side-feature pooling, RankMixer's user-token projection, padding):", "",
                  "| variant | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]  # fmt: skip
        lines += [f"| {r['variant']} | " + " | ".join(f"{r[f'{p}_ms']:.1f}" for p in parts) + " |"
                  for r in fw]  # fmt: skip
        fs = forward_shares(payload)
        lines += ["", "Shares of the forward alone (its totals above): " + ", ".join(
            f"{k} {v:.1%}" for k, v in fs.items()) + "."]  # fmt: skip
    c = next((r for r in payload["results"] if r["part"] == "collate"), None)
    if c:
        lines += ["", f"Collation of the step's requests (outside the step): "
                  f"{c['none_s'] * 1e3:.1f} ms without features, {c['features_s'] * 1e3:.1f} ms "
                  "with them."]  # fmt: skip
    s = payload["summary"]
    verdict = "met" if s["met"] else "**NOT met**"
    lines += ["", f"Feature path + RankMixer <= {s['share_target']:.0%} of the step: {verdict} "
              f"({s['features_rankmixer']:.1%}; this run's noise floor, the control's share: "
              f"{s.get('control', float('nan')):.1%})."]  # fmt: skip
    return "\n".join(lines)


def plot(payload: dict[str, Any], axes: Any) -> None:
    """Left: every round's step time per variant; right: the shares."""
    ax_t, ax_s = axes
    for r in (r for r in payload["results"] if r["part"] == "step"):
        ax_t.plot([x * 1e3 for x in r["reps_s"]], "o-", label=r["variant"])
    ax_t.set(xlabel="round", ylabel="step ms")
    ax_t.set_title("training step, round-robin", fontsize=8)
    sh = [r for r in payload["results"] if r["part"] == "share"]
    ax_s.bar([r["name"] for r in sh], [100 * r["share"] for r in sh])
    ax_s.axhline(100 * payload["summary"]["share_target"], color="red", lw=0.8, label="target")
    ax_s.set_ylabel("% of the step")
    ax_s.set_title("share of the step (from medians)", fontsize=8)
    ax_s.tick_params(axis="x", labelsize=7)
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
