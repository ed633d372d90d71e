"""``python -m longseq.bench suite=<name|all> quick=<bool> device=<cpu|cuda> out=<dir>
[dtype=bf16|fp32] [reps=5] [threads=0] [report=docs/benchmarks.md]``.

Hydra entry point (primary config ``configs/bench.yaml``, schema
`longseq.bench.common.BenchArgs`; suites: `longseq.bench.suites.SUITES`). Writes
``<out>/<suite>.json`` and ``<out>/<suite>.png`` per suite; with ``report=`` it then regenerates
that markdown file from every result folder next to ``out`` (see `longseq.bench.report`). Suites
are imported lazily: only ``rlb``, ``reader`` and ``trainer`` load torchrec or pyarrow.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from longseq.bench.common import BenchArgs, setup_threads, write_json
from longseq.bench.suites import run_order, suite_function


def run(args: BenchArgs) -> int:
    """Run the suites ``args`` asks for (``all``: `run_order`); return the exit status."""
    threads = setup_threads(args)
    suites = run_order() if args.suite == "all" else (args.suite,)
    t_all = time.perf_counter()
    failed = []
    for suite in suites:
        t0 = time.perf_counter()
        try:
            payload = suite_function(suite, "run")(args)
        except Exception:  # noqa: BLE001 - report, run the other suites, fail at the end
            traceback.print_exc()
            print(f"[bench] {suite}: FAILED (no {suite}.json written)", file=sys.stderr)
            failed.append(suite)
            continue
        payload["wall_s"] = time.perf_counter() - t0
        path = write_json(args.out, suite, payload)
        from longseq.bench.plots import plot_suite

        png = plot_suite(payload, Path(args.out) / f"{suite}.png")
        print(
            f"[bench] {suite}: {payload['wall_s']:.1f}s, {threads} thread(s) -> {path}"
            + (f", {png}" if png else ""),
            flush=True,
        )
    print(f"[bench] done in {time.perf_counter() - t_all:.1f}s", flush=True)
    if failed:
        print(f"[bench] failed suites: {', '.join(failed)}", file=sys.stderr)
        return 1
    if args.report:
        from longseq.bench.report import write_report

        doc = write_report(Path(args.out).parent, Path(args.report))
        print(f"[bench] report -> {doc}", flush=True)
    return 0


def main() -> None:
    """The Hydra app: ``key=value`` overrides of ``configs/bench.yaml``."""
    from longseq.bench.config import hydra_main

    hydra_main("bench", run)


if __name__ == "__main__":
    main()
