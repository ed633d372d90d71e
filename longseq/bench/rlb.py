"""Suite ``rlb``: request-level against pointwise batching, side by side in one run.

* ``stored``: Parquet bytes per target of both layouts (pyarrow only; plain, zstd with the
  pointwise copies adjacent, zstd with them dispersed over row groups).
* ``h2d``: host-to-device bytes per target of the collated `RequestBatch` (every tensor).
* ``throughput``: targets/s of the trainer's step (sharded `LongSeqModel`, fused sparse optimizer,
  AdamW) with the same targets per step in both layouts, timed round-robin. On CPU 2 gloo ranks
  (1 thread each, as ``make demo``); on CUDA 1 rank (NCCL).
* ``a2a``: bytes each rank puts into the all-to-alls of the sharded embedding lookup, forward
  (ids and embeddings) and backward (embedding gradients); 2 gloo ranks on CPU, item table
  row-wise.

Only this suite uses torchrec; without it (or without pyarrow) the parts that need it are
recorded as skipped with the reason.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from longseq.bench.common import BenchArgs, result_payload


def grid(args: BenchArgs) -> dict[str, Any]:
    """Grids of this mode."""
    if args.tiny:
        return dict(
            time=dict(lengths=[32], targets=[1, 4], targets_per_step=4),
            count=dict(lengths=[32], targets=[1, 4], requests=1),
            stored=dict(lengths=[32, 64], targets=[1, 4], requests=2),
            model=dict(embedding_dim=8, pos_dim=4, head_hidden=[16],
                       stca=dict(d_model=16, num_heads=2, num_layers=1)),
        )  # fmt: skip
    full = not args.quick
    cuda = args.device == "cuda"
    stca = (dict(d_model=128, num_heads=4, num_layers=3, ffn_depth=2, kernel="absorbed")
            if cuda else dict(d_model=64, num_heads=4, num_layers=2))  # fmt: skip
    return dict(
        time=dict(lengths=[512, 2048, 10000] if full else [512, 2048],
                  targets=[1, 4, 16, 64] if full else [1, 4, 16],
                  targets_per_step=64 if full else 16),
        count=dict(lengths=[512, 2048, 10000] if full else [512, 2048],
                   targets=[1, 4, 16, 64], requests=1),
        stored=dict(lengths=[512, 2048, 10000], targets=[1, 4, 16, 64], requests=8),
        model=dict(embedding_dim=64 if cuda else 32, pos_dim=16, stca=stca,
                   head_hidden=[256, 128] if cuda else [128, 64]),
    )  # fmt: skip


def _stored(g: dict[str, Any]) -> list[dict[str, Any]]:
    from longseq.bench.rlb_data import stored_bytes

    return [
        {"part": "stored", **stored_bytes(g["requests"], t, length)}
        for length in g["lengths"]
        for t in g["targets"]
    ]


def _h2d(g: dict[str, Any]) -> list[dict[str, Any]]:
    from longseq.bench.rlb_data import batch_bytes, request_table
    from longseq.data.collate import collate

    rows = []
    for length in g["lengths"]:
        for t in g["targets"]:
            table = request_table(g["requests"], t, length)
            n = g["requests"] * t
            rl, pw = (batch_bytes(collate(table, ["click"], pointwise=p)) for p in (False, True))
            rows.append({
                "part": "h2d", "length": length, "targets": t, "requests": g["requests"],
                "rlb_bytes_per_target": rl["total"] / n, "pointwise_bytes_per_target": pw["total"] / n,
                "rlb_ids_per_target": rl["ids"] / n, "pointwise_ids_per_target": pw["ids"] / n,
                "ratio": rl["total"] / pw["total"], "rlb": rl, "pointwise": pw,
            })  # fmt: skip
    return rows


def _a2a(rank_rows: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Sum the ranks' counts per (length, targets, layout); per target and RLB/pointwise ratios."""
    acc: dict[tuple, dict[str, Any]] = {}
    for rows in rank_rows:
        for r in rows:
            key = (r["length"], r["targets"], r["layout"])
            a = acc.setdefault(key, {"n": 0, "kjt": 0, "ids": 0, "fwd_int": 0, "fwd_float": 0,
                                     "fwd_int_remote": 0, "fwd_float_remote": 0, "bwd_float": 0,
                                     "bwd_float_remote": 0})  # fmt: skip
            a["n"] += r["n_targets"]
            a["kjt"] += r["kjt"]["kjt_values"] + r["kjt"]["kjt_lengths"]
            a["ids"] += r["kjt"]["ids"]
            for ph, tag in (("forward", "fwd"), ("backward", "bwd")):
                for kind in ("int", "float"):
                    for sfx in ("", "_remote"):
                        k = f"{tag}_{kind}{sfx}"
                        if k in a:
                            a[k] += r[ph].get(f"{kind}{sfx}_bytes", 0)
    out = []
    for (length, t, layout), a in sorted(acc.items()):
        if layout != "rlb":
            continue
        p = acc[(length, t, "pointwise")]
        row: dict[str, Any] = {"part": "a2a", "length": length, "targets": t}
        for k in ("kjt", "ids", "fwd_int", "fwd_float", "fwd_int_remote", "fwd_float_remote",
                  "bwd_float", "bwd_float_remote"):  # fmt: skip
            row[f"rlb_{k}_per_target"] = a[k] / a["n"]
            row[f"pointwise_{k}_per_target"] = p[k] / p["n"]
            row[f"{k}_ratio"] = a[k] / p[k] if p[k] else None
        out.append(row)
    return out


def _throughput(rank0: list[dict[str, Any]], world: int) -> list[dict[str, Any]]:
    by = {(r["length"], r["targets"], r["layout"]): r for r in rank0}
    out = []
    for (length, t, layout), r in sorted(by.items()):
        if layout != "rlb":
            continue
        p = by[(length, t, "pointwise")]
        rl_tps = world * r["n_targets"] / r["median_s"]
        pw_tps = world * p["n_targets"] / p["median_s"]
        out.append({
            "part": "throughput", "length": length, "targets": t, "world": world,
            "targets_per_step": world * r["n_targets"],
            "rlb_median_s": r["median_s"], "pointwise_median_s": p["median_s"],
            "rlb_reps_s": r["reps_s"], "pointwise_reps_s": p["reps_s"],
            "rlb_targets_per_s": rl_tps, "pointwise_targets_per_s": pw_tps,
            "speedup": rl_tps / pw_tps,
            "rlb_collate_s": r["collate_s"], "pointwise_collate_s": p["collate_s"],
            "speedup_with_collate": (p["median_s"] + p["collate_s"]) / (r["median_s"] + r["collate_s"]),
        })  # fmt: skip
    return out


def run(args: BenchArgs) -> dict[str, Any]:
    """Run the suite; return the JSON payload."""
    g = grid(args)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    notes = [
        "ratios are RLB / pointwise for bytes and RLB / pointwise targets/s for throughput, "
        "measured in the same run with the same targets; at T=1 both layouts are identical, so "
        "the distance of those rows' speedup from 1.0 is this run's noise floor",
        "stored: zstd_ratio keeps a request's pointwise copies adjacent in one row group "
        "(dictionary + zstd then deduplicate most of them); zstd_ratio_dispersed puts the copies "
        "in different row groups, as in a shuffled pointwise data set",
        "synthetic ids are uniform within a category, so they compress worse than real logs",
    ]
    has_arrow = importlib.util.find_spec("pyarrow") is not None
    has_torchrec = importlib.util.find_spec("torchrec") is not None
    if has_arrow:
        results += _stored(g["stored"])
    else:
        skipped["stored"] = "pyarrow not installed"
    if not (has_arrow and has_torchrec):
        why = "torchrec not installed" if has_arrow else "pyarrow not installed"
        skipped.update(h2d=why, throughput=why, a2a=why)
    else:
        from longseq.bench import rlb_worker
        from longseq.parallel.spawn import RankError, RankTimeout, run_ranks

        results += _h2d(g["stored"])
        base = {"model": g["model"], "dtype": args.resolved_dtype}
        tspec = {**g["time"], "reps": args.reps, "warmup": args.warmup}
        runs: dict[str, tuple[int, str, dict[str, Any]]] = {}
        if args.device == "cuda":  # 1 GPU: time on 1 NCCL rank, count on 2 gloo CPU ranks
            runs["throughput"] = (1, "nccl", {**base, "device": "cuda", "time": tspec})
            runs["a2a"] = (2, "gloo", {**base, "device": "cpu", "count": g["count"]})
        else:  # the trainer as `make demo` runs it: 2 gloo ranks, 1 thread each
            runs["throughput+a2a"] = (
                2, "gloo", {**base, "device": "cpu", "time": tspec, "count": g["count"]}
            )  # fmt: skip
        for name, (world, backend, spec) in runs.items():
            try:
                out = run_ranks(world, rlb_worker.worker, spec, backend=backend, timeout=600)
            except (
                RankError,
                RankTimeout,
            ) as e:  # keep the other parts (e.g. on a machine set up oddly)
                for part in name.split("+"):
                    skipped[part] = f"failed: {str(e)[-2000:]}"
                continue
            if "time" in spec:
                results += _throughput(out[0]["time"], world)
                notes.append(
                    f"throughput: {world} rank(s) x {out[0]['threads']} thread(s); collate_s is "
                    "one collation outside the timed step (speedup_with_collate adds it)"
                )
            if "count" in spec:
                results += _a2a([r["count"] for r in out])
    for part, why in skipped.items():
        results.append({"part": part, "skipped": why})
    return result_payload(
        args,
        "rlb",
        config={**g, "dtype": args.resolved_dtype},
        results=results,
        summary=summarize(results),
        notes=notes,
        skipped=skipped,
    )


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Headline ratios keyed ``L=<length>,T=<targets>``."""
    out: dict[str, dict[str, float]] = {
        "throughput_speedup": {}, "h2d_ratio": {}, "a2a_ids_ratio": {},
        "a2a_fwd_float_ratio": {}, "stored_plain_ratio": {}, "stored_zstd_dispersed_ratio": {},
    }  # fmt: skip
    for r in results:
        if "skipped" in r:
            continue
        key = f"L={r['length']},T={r['targets']}"
        if r["part"] == "throughput":
            out["throughput_speedup"][key] = r["speedup"]
        elif r["part"] == "h2d":
            out["h2d_ratio"][key] = r["ratio"]
        elif r["part"] == "a2a":
            out["a2a_ids_ratio"][key] = r["ids_ratio"]
            out["a2a_fwd_float_ratio"][key] = r["fwd_float_ratio"]
        elif r["part"] == "stored":
            out["stored_plain_ratio"][key] = r["plain_ratio"]
            out["stored_zstd_dispersed_ratio"][key] = r["zstd_ratio_dispersed"]
    return out
