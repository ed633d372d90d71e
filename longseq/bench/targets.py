"""Issue 7's performance targets, evaluated from result payloads (reported, never asserted).

Each check returns what was measured, whether the target is met, and, when it is missed, why and
what would close the gap (kept short and tied to the measured numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def _scaling_ratio(p: dict[str, Any]) -> dict[str, Any]:
    s = p["summary"]
    ratios = {int(k): v for k, v in s["transformer_over_stca"].items()}
    row = {"target": "STCA >= 10x cheaper than the Transformer per target at 8k (fwd+bwd)"}
    if not ratios:
        return {**row, "value": "not measured", "met": None}
    at = 8192 if 8192 in ratios else max(ratios)
    row["value"] = f"{ratios[at]:.1f}x at L={at}"
    row["met"] = ratios[at] >= 10 if at >= 8192 else None
    if at < 8192:
        row["why"] = f"this run stopped at L={at}; run quick=false for 8k"
    elif not row["met"]:
        row["why"] = (
            "at this width the per-event history FFN (O(L d^2)) is most of STCA's cost and the "
            "Transformer's O(L^2 d) attention has not yet dominated; the gap widens ~linearly "
            "with L (fitted exponents below)"
        )
    return row


def _scaling_exponent(p: dict[str, Any]) -> dict[str, Any]:
    s = p["summary"]
    e, u = s["exponent"].get("stca"), s["exponent_upper_half"].get("stca")
    m = s.get("exponent_of_minima", {}).get("stca")
    t = s["exponent"].get("transformer")
    row = {
        "target": "STCA fitted cost exponent <= 1.15 (medians, all lengths)",
        "value": f"{_fmt(e)}; upper half {_fmt(u)}, fastest repetitions {_fmt(m)}; "
        f"Transformer {_fmt(t)}",
        "met": None if e is None else e <= 1.15,
    }
    if row["met"] is False:
        row["why"] = (
            "noise from other jobs on the shared cores at the longest lengths (compare the fit of "
            "the fastest repetitions) or cache misses once the history outgrows the cache"
        )
    elif row["met"] and u is not None and u > 1.15:
        row["why"] = (
            "the upper-half fit exceeds 1.15: the longest steps are the most exposed to other "
            "jobs on this shared machine; the fit of the fastest repetitions is the cleaner one"
        )
    return row


def _rlb(p: dict[str, Any]) -> dict[str, Any]:
    sp = {k: v for k, v in p["summary"]["throughput_speedup"].items() if k.endswith(",T=16")}
    row: dict[str, Any] = {
        "target": "RLB >= 4x the pointwise targets/s at T=16 (training step, rlb suite)"
    }
    if not sp:
        why = p.get("skipped", {}).get("throughput", "T=16 not in this run")
        return {**row, "value": "not measured", "met": None, "why": why}
    row["value"] = ", ".join(f"{v:.1f}x at {k.split(',')[0]}" for k, v in sp.items())
    row["met"] = all(v >= 4 for v in sp.values())
    if not row["met"]:
        row["why"] = (
            "the speedup grows with L: at short histories the work RLB cannot share (target "
            "FFN, query fusion, per-target attention, heads, dense AdamW, DDP all-reduce, gloo "
            "latency) is a large share of the step; longer histories or more targets per step "
            "close the gap"
        )
    return row


def _kernel(p: dict[str, Any]) -> dict[str, Any]:
    rows = [r for r in p["results"] if "skipped" not in r and r["variant"].startswith("step_")]
    row: dict[str, Any] = {"target": "attention step >= 30% of the measured copy bandwidth at 10k"}
    if not rows:
        return {**row, "value": "not measured", "met": None}
    longest = max(r["length"] for r in rows)
    at = [r for r in rows if r["length"] == longest]
    best = max(at, key=lambda r: r["fraction_of_copy_bw"])
    einsum = max(
        (r for r in at if r["variant"] != "step_kv_sdpa"), key=lambda r: r["fraction_of_copy_bw"]
    )
    row["value"] = (
        f"{best['fraction_of_copy_bw']:.0%} ({best['variant']}, T={best['targets']}, "
        f"L={longest}); einsum forms as in STCATower: {einsum['fraction_of_copy_bw']:.0%} "
        f"({einsum['variant']}, T={einsum['targets']})"
    )
    row["met"] = best["fraction_of_copy_bw"] >= 0.3 and longest >= 10000
    if best["fraction_of_copy_bw"] >= 0.3 and einsum["fraction_of_copy_bw"] < 0.3:
        row["why"] = (
            "met only by the fused kernel (scaled_dot_product_attention); STCATower's einsum + "
            "masked softmax writes and re-reads the L-long scores, several times the compulsory "
            "bytes: switching the kv form to SDPA (and a fused absorbed/jagged kernel) closes it"
        )
    elif not row["met"]:
        row["why"] = "unfused score materialisation; a fused split-KV kernel would close it"
    return row


def _serve(p: dict[str, Any]) -> dict[str, Any]:
    s = p["summary"]
    length = p["config"]["length"]
    best = min(s, key=lambda f: s[f]["cost_ratio_max_vs_1"])
    k = s[best]["max_candidates"]
    row = {
        "target": f"a {k}-candidate request < 1.5x a 1-candidate request at 10k (best form)",
        "value": ", ".join(f"{f}: {v['cost_ratio_max_vs_1']:.1f}x" for f, v in s.items())
        + f" (L={length})",
        "met": s[best]["cost_ratio_max_vs_1"] < 1.5 if length >= 10000 else None,
    }
    bound = p["config"].get("flop_bound_ratio")
    if row["met"] is False:
        m, u = s[best]["marginal_s_per_candidate"], s[best]["user_side_s"]
        row["why"] = (
            f"each extra candidate costs {m * 1e3:.2f} ms against {u * 1e3:.0f} ms of user side "
            f"({best})"
        )
        if bound:
            row["why"] += (
                f"; counting multiply-adds, {k} candidates' attention over {length} events is "
                f"{bound - 1:.0%} of this tower's user side (history FFNs, keys/values), so even "
                f"at equal speed per multiply-add the ratio is at least {bound:.2f}x: under 1.5x "
                "needs the attention faster per multiply-add than the FFN GEMMs, or a tower whose "
                "user side is heavier relative to d (deeper/wider history FFNs, as in the paper)"
            )
    return row


def _serve_default(p: dict[str, Any]) -> dict[str, Any] | None:
    """The same target for the model's default recipe (id-match bias, count channel), served
    through its match tables (`longseq.model.stca_tables`); None for results without them."""
    s = {f: v["tables"] for f, v in p["summary"].items() if "tables" in v}
    if not s:
        return None
    length = p["config"]["length"]
    best = min(s, key=lambda f: s[f]["cost_ratio_max_vs_1"])
    paper = p["summary"][best]
    row = {
        "target": f"the default model (recipe, match tables): {s[best]['max_candidates']} "
        "candidates < 1.5x one at 10k",
        "value": ", ".join(f"{f}+tables: {v['cost_ratio_max_vs_1']:.2f}x" for f, v in s.items())
        + f"; {best} without them {p['summary'][best]['recipe']['cost_ratio_max_vs_1']:.2f}x, "
        f"the paper's tower {paper['cost_ratio_max_vs_1']:.2f}x (L={length})",
        "met": s[best]["cost_ratio_max_vs_1"] < 1.5 if length >= 10000 else None,
    }
    if row["met"] is False:
        row["why"] = (
            f"a candidate costs {s[best]['marginal_s_per_candidate'] * 1e3:.2f} ms against the "
            f"paper tower's {paper['marginal_s_per_candidate'] * 1e3:.2f} ms: the recipe now costs "
            "about what the attention costs, and the attention alone is above 1.5x (row above)"
        )
    return row


def _packed(p: dict[str, Any]) -> dict[str, Any]:
    s = {k: v for k, v in p["summary"].items() if "packed_speedup" in v}
    row = {
        "target": "packed (FlexAttention) beats padded on ragged default-preset lengths",
        "value": ", ".join(f"{k}: {v['packed_speedup']:.2f}x" for k, v in s.items()),
        "met": all(v["packed_speedup"] > 1 for v in s.values()) if s else None,
    }
    if row["met"] is False:
        row["why"] = (
            "the FlexAttention call's fixed cost (block mask, padding to the bucketed shape) "
            "outweighs the padding it saves at these lengths; larger or more ragged batches "
            "favour it"
        )
    return row


def _per_length(
    target: str, values: dict[str, float], fmt: str, met: Callable[[float], bool]
) -> dict[str, Any]:
    """A target row over ``{"L=<n>": value}``: met when ``met(value)`` holds at every length;
    ``fmt`` formats one value (e.g. ``"{:.1f}x"``)."""
    row: dict[str, Any] = {"target": target}
    if not values:
        return {**row, "value": "not measured", "met": None, "why": "no length measured"}
    row["value"] = ", ".join(f"{fmt.format(v)} at {k}" for k, v in values.items())
    row["met"] = all(met(v) for v in values.values())
    return row


def _trainer_speedup(p: dict[str, Any]) -> dict[str, Any]:
    row = _per_length(
        "RLB >= 4x the pointwise targets/s at T=16 on the trainer (torchrun, 2 ranks)",
        p["summary"]["speedup"],
        "{:.1f}x",
        lambda v: v >= 4,
    )
    if row["met"] is False:
        row["why"] = "see the rlb suite's row: the unshared per-target work dominates short steps"
    return row


def _trainer_ids(p: dict[str, Any]) -> dict[str, Any]:
    return _per_length(
        "input all-to-all ids per target, RLB / pointwise <= 1/12 at T=16 (issue 5)",
        p["summary"]["ids_ratio"],
        "{:.4f}",
        lambda v: v <= 1 / 12,
    )


def _feat_step(p: dict[str, Any]) -> dict[str, Any]:
    s = p["summary"]
    share = s["features_rankmixer"]
    row = {
        "target": "side features (10 user + 5 candidate) and RankMixer <= 15% of the training "
        "step at long1k shapes",
        "value": f"{share:.1%} (features with the MLP head {s['features_mlp']:.1%}; noise floor "
        f"{s.get('control', float('nan')):.1%})",
        "met": share <= s["share_target"],
    }
    if not row["met"]:
        row["why"] = "see the feat_step section: forward split by part (RankMixer's head is most)"
    return row


def _feat_bytes(p: dict[str, Any]) -> dict[str, Any]:
    per_req = p["summary"]["user_kjt_per_request"]
    big = [k for k in per_req if not k.endswith("T=1")]
    row = {"target": "user features cost per request, not per target (RLB input bytes)"}
    if not big:
        return {**row, "value": "not measured (T=1 only)", "met": None}
    key = big[-1]
    v = per_req[key]
    row["value"] = (f"{v['rlb']:,.0f} B per request at every T (pointwise {v['pointwise']:,.0f} "
                    f"at {key})")  # fmt: skip
    row["met"] = all(x["rlb"] == per_req[big[0]]["rlb"] for x in per_req.values())
    return row


CHECKS = {
    "scaling": (_scaling_ratio, _scaling_exponent),
    "rlb": (_rlb,),
    "trainer": (_trainer_speedup, _trainer_ids),
    "kernel": (_kernel,),
    "serve": (_serve, _serve_default),
    "packed": (_packed,),
    "feat_bytes": (_feat_bytes,),
    "feat_step": (_feat_step,),
}


def evaluate(payloads: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target with ``target``, ``value``, ``met`` (None: not measured here), ``why``."""
    rows = []
    for suite, checks in CHECKS.items():
        if suite in payloads:
            found = (check(payloads[suite]) for check in checks)
            rows += [{"suite": suite, **row} for row in found if row is not None]
    return rows
