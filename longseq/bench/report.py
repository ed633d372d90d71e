"""Regenerate ``docs/benchmarks.md`` (tables + PNG plots) from benchmark result folders.

    python -m longseq.bench.report [results=benchmarks/results] [doc=docs/benchmarks.md]
        [img=docs/img]

(Hydra: primary config ``configs/bench_report.yaml``, schema `longseq.bench.config.ReportConfig`.)

Every sub-folder of ``results`` holding ``<suite>.json`` files (e.g. ``cpu/``, ``gpu/``) becomes a
section; plots go to ``<img>/<folder>_<suite>.png``. The document is generated in full: edit this
module (or `longseq.bench.targets`), not the markdown. Suites, their order and their titles:
`longseq.bench.suites.SUITES`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longseq.bench.plots import plot_suite
from longseq.bench.suites import SUITES, suite_function
from longseq.bench.targets import evaluate

if TYPE_CHECKING:
    from longseq.bench.config import ReportConfig


def load_folder(folder: Path) -> dict[str, dict[str, Any]]:
    """``{suite: payload}`` of the result JSON files in ``folder``."""
    out = {}
    for suite in SUITES:
        f = folder / f"{suite}.json"
        if f.is_file():
            out[suite] = json.loads(f.read_text())
    return out


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _f(x: Any, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def _ok(p: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in p["results"]
        if "skipped" not in r and all(r.get(k) == v for k, v in match.items())
    ]


def scaling_md(p: dict[str, Any]) -> str:
    """The scaling section's tables."""
    towers = p["config"]["towers"]
    by = {(r["tower"], r["length"]): r for r in _ok(p)}
    rows = []
    for length in p["config"]["lengths"]:
        r = [by.get((t, length)) for t in towers]
        ms = [_f(x and x["per_target_s"] * 1e3, ".2f") for x in r]
        mib = [_f(x and x["saved_activation_bytes_per_target"] / 2**20, ".1f") for x in r]
        s = p["summary"]
        rows.append([length, *ms, _f(s["transformer_over_stca"].get(str(length)), ".1f"),
                     _f(s["din_over_stca"].get(str(length)), ".2f"), *mib])  # fmt: skip
    head = ["L", *(f"{t} ms" for t in towers), "transformer / stca", "din / stca"]
    head += [f"{t} MiB saved" for t in towers]
    e, u = p["summary"]["exponent"], p["summary"]["exponent_upper_half"]
    m = p["summary"].get("exponent_of_minima", {})
    fit = ", ".join(
        f"{t} {_f(e.get(t), '.2f')} ({_f(u.get(t), '.2f')}; minima {_f(m.get(t), '.2f')})"
        for t in towers
    )
    skipped = [
        f"{r['tower']}@{r['length']}: {r['skipped']}" for r in p["results"] if "skipped" in r
    ]
    text = (
        _table(head, rows)
        + f"\n\nFitted log-log exponent of cost against L from the medians, all lengths (upper half; from the fastest repetitions): {fit}."
    )
    return text + (f"\n\nSkipped: {'; '.join(skipped)}." if skipped else "")


def rlb_md(p: dict[str, Any]) -> str:
    """The rlb section's tables."""
    parts = []
    tp = _ok(p, part="throughput")
    if tp:
        rows = [[r["length"], r["targets"], r["targets_per_step"], f"{r['rlb_targets_per_s']:.0f}",
                 f"{r['pointwise_targets_per_s']:.0f}", f"**{r['speedup']:.2f}x**",
                 f"{r['speedup_with_collate']:.2f}x"] for r in tp]  # fmt: skip
        parts.append("Training throughput (the trainer's step, same targets per step):\n\n" + _table(
            ["L", "T", "targets/step", "RLB targets/s", "pointwise targets/s", "speedup",
             "speedup incl. collate"], rows))  # fmt: skip
    st = {(r["length"], r["targets"]): r for r in _ok(p, part="stored")}
    h2 = {(r["length"], r["targets"]): r for r in _ok(p, part="h2d")}
    aa = {(r["length"], r["targets"]): r for r in _ok(p, part="a2a")}
    rows = []
    for key in sorted(set(st) | set(h2) | set(aa)):
        s, h, a = st.get(key), h2.get(key), aa.get(key)
        rows.append([*key, _f(s and s["plain_ratio"], ".3f"), _f(s and s["zstd_ratio"], ".3f"),
                     _f(s and s["zstd_ratio_dispersed"], ".3f"),
                     _f(h and h["rlb_bytes_per_target"], ",.0f"),
                     _f(h and h["pointwise_bytes_per_target"], ",.0f"), _f(h and h["ratio"], ".3f"),
                     _f(a and a["rlb_ids_per_target"], ",.0f"), _f(a and a["pointwise_ids_per_target"], ",.0f"),
                     _f(a and a["ids_ratio"], ".3f"), _f(a and a["fwd_float_ratio"], ".3f")])  # fmt: skip
    if rows:
        parts.append("Bytes per target, RLB / pointwise (`–`: not in this run's grid):\n\n" + _table(
            ["L", "T", "stored plain", "stored zstd adjacent", "stored zstd dispersed",
             "H2D B/target RLB", "H2D pointwise", "H2D ratio", "a2a ids/target RLB",
             "a2a ids pointwise", "a2a ids ratio", "a2a embeddings ratio"], rows))  # fmt: skip
    for part, why in p.get("skipped", {}).items():
        parts.append(f"Skipped `{part}`: {why}.")
    return "\n\n".join(parts)


def kernel_md(p: dict[str, Any]) -> str:
    """The kernel section's tables."""
    c = p["ceilings"]
    head = (f"Ceilings in this process: copy {c['copy']['bytes_per_s'] / 1e9:.1f} GB/s "
            f"(clone {c['clone']['bytes_per_s'] / 1e9:.1f} GB/s), matmul "
            f"{c['matmul']['flops_per_s'] / 1e9:.0f} GFLOP/s (n={c['matmul']['n']}); batch "
            f"{p['config']['batch']} requests, d={p['config']['d_model']}, "
            f"h={p['config']['num_heads']}.")  # fmt: skip
    rows = [[r["variant"], r["length"], r["targets"], f"{r['median_s'] * 1e3:.2f}",
             f"{r['bytes_per_s'] / 1e9:.1f}", f"**{r['fraction_of_copy_bw']:.0%}**",
             f"{r['flops_per_s'] / 1e9:.1f}", f"{r['fraction_of_matmul']:.0%}"]
            for r in _ok(p)]  # fmt: skip
    table = _table(["variant", "L", "T", "ms", "GB/s", "of copy", "GFLOP/s", "of matmul"], rows)
    jagged = p["summary"].get("jagged")  # results written before the jagged layout existed
    return f"{head}\n\n{table}" + (f"\n\nJagged form: {jagged}." if jagged else "")


def serve_md(p: dict[str, Any]) -> str:
    """The serve section's tables."""
    ks = p["config"]["candidates"]
    rows = []
    entries = [(form, form, s) for form, s in p["summary"].items()]
    for form, s in p["summary"].items():  # the recipe and tables variants (later results)
        entries += [(f"{form}+{v}", f"{form}+{v}", s[v]) for v in ("recipe", "tables") if v in s]
    for name, key, s in entries:
        by = {r["candidates"]: r for r in _ok(p, form=key, part="request")}
        rows.append([name, f"{s['user_side_s'] * 1e3:.1f}",
                     *(_f(by.get(k) and by[k]["median_s"] * 1e3, ".1f") for k in ks),
                     f"{s['marginal_s_per_candidate'] * 1e3:.3f}",
                     f"**{s['cost_ratio_max_vs_1']:.2f}x**", f"{s['candidates_per_s_at_max']:.0f}"])  # fmt: skip
    head = ["form", "user side ms", *(f"K={k} ms" for k in ks), "marginal ms/candidate",
            f"K={ks[-1]} / K=1", f"candidates/s at K={ks[-1]}"]  # fmt: skip
    return (
        f"History {p['config']['length']} events, d={p['config']['d_model']}, "
        f"{p['config']['num_layers']} layers.\n\n" + _table(head, rows)
    )


def _env_line(p: dict[str, Any]) -> str:
    e = p["environment"]
    git = (e.get("git") or {}).get("commit") or "unknown"
    dirty = "+dirty" if (e.get("git") or {}).get("dirty") else ""
    return (f"{e['device_name']} ({e['device']}), {e['dtype']}, torch {e['torch']}, "
            f"{e['torch_threads']} thread(s) of {e['usable_cores']} usable cores, mode {e['mode']}, "
            f"git {git[:10]}{dirty}, {e['time_utc']}, {p.get('wall_s', 0):.0f} s")  # fmt: skip


def _preamble(folders: dict[str, dict[str, dict[str, Any]]]) -> str:
    envs = [p["environment"] for f in folders.values() for p in f.values()]
    cpu = next((e for e in envs if e["device"] == "cpu"), None)
    has_gpu = any(e["device"] == "cuda" for e in envs)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m longseq.bench.report` from the JSON files under "
        "`benchmarks/results/` (edit `longseq/bench/report.py`, not this file). Regenerate with "
        "`make bench`, or `python -m longseq.bench suite=all quick=true device=cpu "
        "out=benchmarks/results/cpu report=docs/benchmarks.md`. What each suite measures: "
        "`benchmarks/README.md`.",
        "",
        "## How to read these numbers",
        "",
    ]
    if cpu:
        lines.append(
            f"- CPU results come from a shared machine: {cpu['cpu_model']}, "
            f"{cpu['usable_cores']} cores that other jobs use at the same time (noisy), no GPU; "
            f"torch {cpu['torch']} with {cpu['torch_threads']} intra-op thread(s)."
        )
    lines += [
        "- Absolute CPU times say little about a GPU trainer. Only ratios measured side by side "
        "in one run count: the towers are timed round-robin in one process, request-level and "
        "pointwise steps round-robin in the same ranks, the attention step against copy and "
        "matmul ceilings measured in the same process. Medians of 5 repetitions; the raw "
        "repetitions are in the JSON.",
        "- Bytes are counted, not timed (stored Parquet bytes, host-to-device tensor bytes, bytes "
        "passed to the all-to-alls).",
        "- CPU runs use 1 intra-op thread per process (two OpenMP workers on 2 shared cores stall "
        "each other) and keep freed host memory in the heap (`tune_malloc`), so steps are not "
        "timed with fresh page faults.",
        "- Grids: "
        + "; ".join(
            f"`{name}`: {next(iter(f.values()))['environment']['mode']}"
            for name, f in folders.items()
        )
        + " (`quick=true`: scaling to 8k, serving at 10k, trainer throughput at L <= 2k and "
        "T <= 16, all-to-all bytes at L <= 2k; `quick=false` extends each).",
    ]
    if not has_gpu:
        lines.append(
            "- **No GPU run has been made yet.** `benchmarks/gpu.sh` is prepared: it runs every "
            "suite with `device=cuda dtype=bf16` into `benchmarks/results/gpu/` and regenerates "
            "this page, which then shows both."
        )
    return "\n".join(lines)


def _targets_md(folders: dict[str, dict[str, dict[str, Any]]]) -> str:
    out = ["## Targets of issues 5 and 7 (reported, not asserted)", ""]
    for name, payloads in folders.items():
        rows = [[r["target"], r["value"],
                 {True: "met", False: "**missed**", None: "not measured"}[r["met"]], r.get("why", "")]
                for r in evaluate(payloads)]  # fmt: skip
        out += [
            f"`{name}`:",
            "",
            _table(["target", "measured", "", "why / what closes the gap"], rows),
            "",
        ]
    return "\n".join(out)


def write_report(results: str | Path, doc: str | Path, img: str | Path | None = None) -> Path:
    """Write ``doc`` from every result folder under ``results``; return its path."""
    root, doc = Path(results), Path(doc)
    img_dir = Path(img) if img else doc.parent / "img"
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    folders = {(c.name if c != root else root.name): load_folder(c) for c in candidates}
    folders = {k: v for k, v in folders.items() if v}
    if not folders:
        raise FileNotFoundError(f"no <suite>.json result files under {root}")
    sections = [_preamble(folders), _targets_md(folders)]
    for name, payloads in folders.items():
        for suite in SUITES:
            if suite not in payloads:
                continue
            p = payloads[suite]
            png = plot_suite(p, img_dir / f"{name}_{suite}.png")
            if png is None and (img_dir / f"{name}_{suite}.png").is_file():  # no matplotlib here
                png = img_dir / f"{name}_{suite}.png"
            rel = os.path.relpath(png, doc.parent) if png else None
            notes = "\n".join(f"- {n}" for n in p.get("notes", []))
            sections.append("\n".join([
                f"## `{name}` / {suite}: {SUITES[suite].title}", "",
                f"Command: `{p['command']}`  ", f"Environment: {_env_line(p)}", "",
                suite_function(suite, "render")(p), "", *([f"![{suite}]({rel})", ""] if rel else []), notes,
            ]))  # fmt: skip
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n\n".join(sections).rstrip() + "\n")
    return doc


def main(cfg: ReportConfig) -> int:
    """Write the report ``cfg`` asks for; return the exit status (2: no result files)."""
    try:
        doc = write_report(cfg.results, cfg.doc, cfg.img or None)
    except FileNotFoundError as e:
        print(f"error: results={cfg.results}: {e}", file=sys.stderr)
        return 2
    print(f"[bench] report -> {doc}")
    return 0


if __name__ == "__main__":
    from longseq.bench.config import hydra_main

    hydra_main("bench_report", main)
