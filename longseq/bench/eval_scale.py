"""Suite ``eval_scale``: evaluation metrics over N processes, distributed against gathered.

    python -m longseq.bench suite=eval_scale quick=false out=benchmarks/results/cpu  # 10M targets

Synthetic predictions of one task (`make_share`): ``targets`` targets, 16 per request, requests
hashed onto ``targets / 64`` users (so every user's targets lie on several ranks), scores
rounded to 1e-4 (ties), labels drawn with the score as probability. The targets come in chunks
of 2**18 dealt round-robin over the ranks; each rank generates only its own chunks, so the data
set is the same at every world size. Per world size, spawned gloo ranks
(`longseq.parallel.spawn`) compute the metrics of `longseq.eval.window.window_metrics`:

* ``single`` (1 process): `window_metrics` on every target;
* ``dist``: `longseq.eval.dist_metrics.dist_window_metrics`, the evaluator's path (no rank holds
  all predictions);
* ``gather``: the evaluator's previous path, reproduced here for the comparison: every rank's
  `Predictions` pickled to rank 0 (``gather_object``), merged in batch order, `window_metrics`.

Per rank: peak RSS (``getrusage``: the process's high-water mark, torch import included), RSS
after the imports and after the rank's predictions are built; the time from a barrier before to
a barrier after the metrics (the median over repetitions, each the slowest rank's). Every run's
metrics must equal the single process's (``summary.identical``).
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import numpy as np

from longseq.bench.common import BenchArgs, result_payload

TASKS = ["click"]
CHUNK = 1 << 18
PER_REQUEST = 16


def grid(args: BenchArgs) -> dict[str, Any]:
    """Targets, world sizes and repetitions of this mode."""
    if args.tiny:
        return dict(targets=20_000, chunk=4096, worlds=[1, 2], reps=args.reps)
    if args.quick:
        return dict(targets=2_000_000, chunk=CHUNK, worlds=[1, 2, 3], reps=min(args.reps, 3))
    return dict(targets=10_000_000, chunk=CHUNK, worlds=[1, 2, 3], reps=min(args.reps, 3))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_share(targets: int, chunk: int, rank: int, world: int, seed: int = 0):
    """This rank's `Predictions`: chunks ``rank, rank + world, ...`` of the synthetic targets."""
    from longseq.eval.predict import Predictions

    mine = [c for c in range(-(-targets // chunk)) if c % world == rank]
    sizes = [min(chunk, targets - c * chunk) for c in mine]
    n = sum(sizes)
    cols = {k: np.empty(n, np.int64) for k in ("request_id", "user_id", "target_index")}
    cols |= {k: np.empty(n, np.int64) for k in ("served_len", "batch_index")}
    cols |= {k: np.empty((n, 1), np.float32) for k in ("labels", "scores")}
    users = max(1, targets // 64)
    at = 0
    for c, size in zip(mine, sizes):
        rng = np.random.default_rng([seed, c])
        g = c * chunk + np.arange(size, dtype=np.int64)
        req = g // PER_REQUEST
        h = (req.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
        s = np.round(rng.beta(2.0, 5.0, size), 4).astype(np.float32)
        part = {
            "request_id": req,
            "user_id": (h % np.uint64(users)).astype(np.int64),
            "target_index": g % PER_REQUEST,
            "served_len": req % 1000 + 1,
            "batch_index": np.full(size, c, np.int64),
        }
        for k, v in part.items():
            cols[k][at : at + size] = v
        cols["scores"][at : at + size, 0] = s
        cols["labels"][at : at + size, 0] = rng.random(size) < s
        at += size
    return Predictions(**cols)


def _gather_metrics(p: Any) -> list[dict[str, Any]] | None:
    """The previous evaluator: predictions gathered on rank 0, which computes the metrics."""
    import torch.distributed as dist

    from longseq.eval.predict import Predictions
    from longseq.eval.window import window_metrics

    parts: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(p, parts, dst=0)
    if parts is None:
        return None
    parts = [q for q in parts if q.request_id.size]
    keys = Predictions.__dataclass_fields__
    merged = {k: np.concatenate([getattr(q, k) for q in parts]) for k in keys}
    del parts
    order = np.argsort(merged["batch_index"], kind="stable")
    full = Predictions(**{k: merged.pop(k)[order] for k in keys})
    return window_metrics(full, TASKS)


def _worker(rank: int, world: int, path: str, g: dict[str, Any]) -> dict[str, Any]:
    import torch.distributed as dist

    from longseq.eval.dist_metrics import dist_window_metrics
    from longseq.eval.window import window_metrics

    base = _rss_mib()
    p = make_share(g["targets"], g["chunk"], rank, world)
    data = _rss_mib()
    times, rows = [], None
    for _ in range(g["reps"]):
        dist.barrier()
        t0 = time.perf_counter()
        if path == "single":
            rows = window_metrics(p, TASKS)
        elif path == "dist":
            rows = dist_window_metrics(p, TASKS)
        else:
            rows = _gather_metrics(p)
        dist.barrier()
        times.append(time.perf_counter() - t0)
    return dict(base=base, data=data, peak=_rss_mib(), times=times, rows=rows)


def run(args: BenchArgs) -> dict[str, Any]:
    """Measure every (world size, path); return the suite payload."""
    from longseq.parallel.spawn import run_ranks

    g = grid(args)
    plan = [
        (w, path) for w in g["worlds"] for path in (("single",) if w == 1 else ("dist", "gather"))
    ]
    results, reference, identical = [], None, True
    for world, path in plan:
        out = run_ranks(world, _worker, path, g, timeout=3600)
        rows = out[0]["rows"]
        reference = rows if reference is None else reference
        identical &= rows == reference and all(o["rows"] in (None, rows) for o in out)
        reps = [max(o["times"][i] for o in out) for i in range(g["reps"])]
        results.append(
            {
                "world": world,
                "path": path,
                "targets": g["targets"],
                "seconds": statistics.median(reps),
                "reps_s": reps,
                "peak_rss_mib": [round(o["peak"], 1) for o in out],
                "peak_rss_mib_max": round(max(o["peak"] for o in out), 1),
                "data_rss_mib": [round(o["data"], 1) for o in out],
                "base_rss_mib": [round(o["base"], 1) for o in out],
                "metrics": rows[0],
            }
        )
    dist_peak = {r["world"]: r["peak_rss_mib_max"] for r in results if r["path"] != "gather"}
    worlds = sorted(dist_peak)
    summary = {
        "identical": bool(identical),
        "dist_peak_falls_with_ranks": all(
            dist_peak[a] > dist_peak[b] for a, b in zip(worlds, worlds[1:])
        ),
        "dist_peak_rss_mib": dist_peak,
        "gather_peak_rss_mib": {
            r["world"]: r["peak_rss_mib_max"] for r in results if r["path"] == "gather"
        },  # fmt: skip
    }
    notes = [
        "Peak RSS is each process's high-water mark (ru_maxrss), torch and NumPy imports "
        f"included (about {results[0]['base_rss_mib'][0]:.0f} MiB here); the table shows the "
        "largest rank. `single` is 1 process, `dist` the evaluator's distributed metrics, "
        "`gather` the previous evaluator (gather_object of every prediction to rank 0).",
        "Seconds: metrics only (predictions already in memory), slowest rank, median of "
        f"{g['reps']} repetitions; 3 processes share 2 cores on the CPU machine, which other "
        "jobs also use: times vary up to 2x between repetitions (reps_s in the JSON), the peak "
        "memory is the stable number.",
        f"Metrics identical to the single process in every run: {summary['identical']}.",
    ]
    return result_payload(args, "eval_scale", g, results, summary, notes)


def render(payload: dict[str, Any]) -> str:
    """Markdown table: one row per (processes, path)."""
    lines = [
        "| processes | path | targets | peak RSS per rank, max (MiB) | after predictions (MiB) "
        "| seconds | AUC | GAUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in payload["results"]:
        m = r["metrics"]
        lines.append(
            f"| {r['world']} | {r['path']} | {r['targets']:,} | {r['peak_rss_mib_max']:.0f} "
            f"| {max(r['data_rss_mib']):.0f} | {r['seconds']:.2f} | {m['auc']:.6f} "
            f"| {m['gauc']:.6f} |"
        )
    s = payload["summary"]
    lines += ["", f"Identical metrics in every run: {'yes' if s['identical'] else 'NO'}; "
              f"distributed peak per rank falls with the ranks: "
              f"{'yes' if s['dist_peak_falls_with_ranks'] else 'NO'}."]  # fmt: skip
    return "\n".join(lines)


def plot(payload: dict[str, Any], axes: Any) -> None:
    """Peak RSS per rank and seconds against the number of processes, per path."""
    ax_m, ax_t = axes
    single = [r for r in payload["results"] if r["path"] == "single"]
    for path, style in (("dist", "o-"), ("gather", "s--")):
        rows = sorted(single + [r for r in payload["results"] if r["path"] == path],
                      key=lambda r: r["world"])  # fmt: skip
        xs = [r["world"] for r in rows]
        ax_m.plot(xs, [r["peak_rss_mib_max"] for r in rows], style, label=path)
        ax_t.plot(xs, [r["seconds"] for r in rows], style, label=path)
    for ax, title in ((ax_m, "peak RSS per rank, max (MiB)"), (ax_t, "metrics seconds")):
        ax.set_xticks(sorted({r["world"] for r in payload["results"]}))
        ax.set_xlabel("processes")
        ax.set_title(title)
        ax.legend()
