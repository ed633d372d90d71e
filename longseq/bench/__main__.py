"""``python -m longseq.bench suite=<scaling|rlb|kernel|serve|all> quick=<bool> device=<cpu|cuda>
out=<dir> [dtype=bf16|fp32] [reps=5] [threads=0] [report=docs/benchmarks.md]``.

Writes ``<out>/<suite>.json`` and ``<out>/<suite>.png`` per suite; with ``report=`` it then
regenerates that markdown file from every result folder next to ``out`` (see
`longseq.bench.report`). Suites are imported lazily: only ``rlb`` loads torchrec.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

from longseq.bench.common import SUITES, BenchError, parse_args, setup_threads, write_json

#: ``all`` runs the torch-only suites first, then those that load torchrec (``reader`` through
#: collation, ``rlb`` with spawned ranks) and last ``trainer`` (the real torchrun trainer).
ORDER = ("scaling", "kernel", "serve", "reader", "rlb", "trainer")


def main(argv: list[str] | None = None) -> int:
    """Run the requested suites; return the exit status."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    threads = setup_threads(args)
    suites = ORDER if args.suite == "all" else (args.suite,)
    assert set(ORDER) == set(SUITES)
    t_all = time.perf_counter()
    failed = []
    for suite in suites:
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(f"longseq.bench.{suite}")
            payload = module.run(args)
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


if __name__ == "__main__":
    sys.exit(main())
