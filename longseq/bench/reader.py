"""Suite ``reader``: data-pipeline throughput and storage of request-level (RLB) vs pointwise rows.

    python -m longseq.bench suite=reader [quick=true] [tiny=false] [reps=5] [out=benchmarks/results/cpu]

On synthetic request-level data (`longseq.bench.rlb_data.request_table`, 16 targets per request),
written as a split by `longseq.data.writer.SplitWriter` (zstd, row groups of 256), per history
length:

* ``parquet``: pyarrow reading every row group (the ceiling of any reader);
* ``reader``: one shuffled epoch of `RequestReader` (validation of every row included: the
  default ``on_bad_row=error``), requests/s;
* ``collate``: `collate` of those batches into `RequestBatch`es (full history), requests/s;
* ``stream_w<N>``: the trainer's `BatchStream` (reader + Beta windows + collation) with N
  data-loader workers, steady state after the workers start, requests/s.

And ``startup``: `RequestReader` start-up (constructing it: file list, row groups, schema check)
on a split of many small files (10,000; tiny: 50), without and with the split's
``_manifest.json`` (`longseq.data.manifest`), and the time to write the manifest from the footers
(``python -m longseq.data.index``). Page cache warm in both cases.

And ``stored``: bytes on disk per target of the request-level layout against the pointwise one
(each target a row repeating its history), both as Parquet with the same writer settings, at
histories 512, 2k and 10k (`longseq.bench.rlb_data.stored_bytes`: plain, zstd with a request's
pointwise copies adjacent, zstd with them dispersed as in a shuffled pointwise set).
`render(payload)` formats a payload as Markdown; `plot(payload, axes)` draws it.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from longseq.bench.common import BenchArgs, result_payload
from longseq.bench.rlb_data import VOCAB, request_table, stored_bytes
from longseq.data.batcher import StreamSpec
from longseq.data.collate import collate
from longseq.data.config import DataConfig
from longseq.data.manifest import manifest_path, write_manifest
from longseq.data.meta import DatasetMeta
from longseq.data.reader import RequestReader
from longseq.data.stream import BatchStream
from longseq.data.windows import WindowConfig
from longseq.data.writer import SplitWriter

TARGETS = 16


def grid(args: BenchArgs) -> dict[str, Any]:
    """Sizes of this mode: ``requests[length]`` rows per throughput data set."""
    if args.tiny:
        return dict(lengths=[64], requests={64: 256}, batch=32, workers=[0, 1],
                    stored_lengths=[64], stored_requests=16, startup_files=50)  # fmt: skip
    if args.quick:
        return dict(lengths=[512, 2048], requests={512: 2048, 2048: 512}, batch=32,
                    workers=[0, 2], stored_lengths=[512, 2048, 10240], stored_requests=64,
                    startup_files=10_000)  # fmt: skip
    return dict(lengths=[512, 2048, 10240], requests={512: 8192, 2048: 2048, 10240: 512},
                batch=32, workers=[0, 1, 2, 4], stored_lengths=[512, 2048, 10240],
                stored_requests=256, startup_files=10_000)  # fmt: skip


def write_split(
    root: Path, requests: int, length: int, rows_per_file: int = 4096, row_group_size: int = 256
) -> Path:
    """A data set folder with ``train/`` (as the generator writes it) and ``meta.json``."""
    w = SplitWriter(root / "train", rows_per_file=rows_per_file, row_group_size=row_group_size)
    for start in range(0, requests, 1024):
        n = min(1024, requests - start)
        t = request_table(n, TARGETS, length, seed=start)
        t = t.set_column(0, "request_id", pa.array(np.arange(start, start + n), pa.int64()))
        w.add(t)
    w.close()
    DatasetMeta(**VOCAB, tasks=("click",), targets_per_request=TARGETS).write(root)
    return root / "train"


def _timed(fn, reps: int, warmup: int = 1) -> tuple[list[float], Any]:
    """Seconds of ``reps`` calls after ``warmup`` untimed ones, and the last result."""
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def _row(stage: str, requests: int, times: list[float], **extra: Any) -> dict[str, Any]:
    """Median (reported) and best (least disturbed on a shared machine) requests/s."""
    med = statistics.median(times)
    return {"stage": stage, "requests_per_s": requests / med, "best_requests_per_s":
            requests / min(times), "seconds": med, "reps_s": times, **extra}  # fmt: skip


def _throughput(split: Path, requests: int, g: dict[str, Any], reps: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    files = sorted(str(p) for p in split.glob("*.parquet"))

    def parquet() -> int:
        n = 0
        for f in files:
            pf = pq.ParquetFile(f)
            for gi in range(pf.num_row_groups):
                n += pf.read_row_group(gi).num_rows
        return n

    def reader() -> list:
        return list(RequestReader(split, g["batch"], shuffle=True, shuffle_buffer=1024))

    times, n = _timed(parquet, reps)
    rows.append(_row("parquet", n, times))
    times, tables = _timed(reader, reps)
    assert sum(t.num_rows for t in tables) == requests
    rows.append(_row("reader", requests, times))
    times, _ = _timed(lambda: [collate(t, ["click"]) for t in tables], reps)
    rows.append(_row("collate", requests, times))
    length = int(tables[0].column("hist_item_id").combine_chunks().value_lengths()[0].as_py())
    window = WindowConfig(mode="beta", l_min=8, l_avg=max(16, length // 4), l_max=length)
    for workers in g["workers"]:
        data = DataConfig(path=str(split.parent), split=split.name, batch_size=g["batch"],
                          shuffle_buffer=1024, window=window, num_workers=workers)  # fmt: skip
        spec = StreamSpec(data, rank=0, world_size=1, seed=0, tasks=["click"])
        stream = BatchStream(spec, torch.device("cpu"))
        next(stream)  # start-up (worker processes, first window)
        k = requests // g["batch"]  # about one epoch: every window loaded once

        def epoch(stream: BatchStream = stream, k: int = k) -> None:
            for _ in itertools.islice(stream, k):
                pass

        times, _ = _timed(epoch, reps, warmup=0)
        stream.close()
        rows.append(_row(f"stream_w{workers}", k * g["batch"], times, workers=workers))
    return rows


def _startup(files: int, reps: int) -> list[dict[str, Any]]:
    """Reader start-up on ``files`` files of 4 requests (2 row groups each), history 32."""
    with tempfile.TemporaryDirectory(prefix="longseq-bench-startup-") as tmp:
        split = write_split(Path(tmp), 4 * files, 32, rows_per_file=4, row_group_size=2)
        manifest = manifest_path(split)
        assert len(list(split.glob("*.parquet"))) == files and manifest.is_file()
        rows = []
        for stage in ("footers", "manifest"):
            if stage == "footers":
                manifest.rename(manifest.with_suffix(".off"))
            times, reader = _timed(lambda: RequestReader(split, 32), reps)
            if stage == "footers":
                manifest.with_suffix(".off").rename(manifest)
            rows.append({"part": "startup", "stage": stage, "files": files, "row_groups":
                         len(reader.plan.groups), "seconds": statistics.median(times),
                         "best_s": min(times), "reps_s": times})  # fmt: skip
        times, _ = _timed(lambda: write_manifest(split), reps)
        rows.append({"part": "startup", "stage": "index", "files": files, "row_groups":
                     rows[0]["row_groups"], "seconds": statistics.median(times),
                     "best_s": min(times), "reps_s": times})  # fmt: skip
    return rows


def run(args: BenchArgs) -> dict[str, Any]:
    """Measure; return the suite payload (``results``: one row per measurement)."""
    g = grid(args)
    reps = args.reps
    results: list[dict[str, Any]] = []
    for length in g["lengths"]:
        n = g["requests"][length]
        with tempfile.TemporaryDirectory(prefix="longseq-bench-reader-") as tmp:
            split = write_split(Path(tmp), n, length)
            disk = sum(p.stat().st_size for p in split.glob("*.parquet"))
            for r in _throughput(split, n, g, reps):
                results.append({"part": "throughput", "length": length, "requests": n,
                                "targets": TARGETS, "bytes_on_disk": disk, **r})  # fmt: skip
            print(f"[reader] L={length}: done", file=sys.stderr, flush=True)
    for length in g["stored_lengths"]:
        results.append({"part": "stored", **stored_bytes(g["stored_requests"], TARGETS, length)})
    results += _startup(g["startup_files"], reps)
    print(f"[reader] start-up on {g['startup_files']} files: done", file=sys.stderr, flush=True)
    return result_payload(
        args, "reader", {**g, "requests": {str(k): v for k, v in g["requests"].items()},
                         "reps_used": reps}, results, summarize(results),
        notes=[
            "reader includes validation of every row (on_bad_row=error, the default)",
            "stream_wN: one epoch of batches per repetition, after the first batch (worker "
            "start-up); on a 2-core machine worker processes compete with the main process",
            "requests_per_s: median of the repetitions; best_requests_per_s: the fastest",
            "startup: constructing RequestReader (no row read), median seconds; page cache warm "
            "(files just written): on a network file system reading the footers costs more",
        ],
    )  # fmt: skip


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests/s per stage and length; RLB/pointwise stored-bytes ratio per length; reader
    start-up seconds without (footers) and with the manifest, and the speed-up."""
    tp = [r for r in results if r["part"] == "throughput"]
    st = [r for r in results if r["part"] == "stored"]
    su = {r["stage"]: r["seconds"] for r in results if r["part"] == "startup"}
    return {
        "startup_s": su,
        "startup_speedup": su["footers"] / su["manifest"] if su else None,
        "requests_per_s": {f"{r['stage']}@{r['length']}": r["requests_per_s"] for r in tp},
        "stored_zstd_ratio": {str(r["length"]): r["zstd_ratio"] for r in st},
        "stored_zstd_ratio_dispersed": {str(r["length"]): r["zstd_ratio_dispersed"] for r in st},
    }


def render(payload: dict[str, Any]) -> str:
    """The payload as Markdown: a throughput table and a stored-bytes table."""
    tp = [r for r in payload["results"] if r["part"] == "throughput"]
    st = [r for r in payload["results"] if r["part"] == "stored"]
    stages = list(dict.fromkeys(r["stage"] for r in tp))
    lengths = sorted({r["length"] for r in tp})
    by = {(r["stage"], r["length"]): r for r in tp}
    lines = ["Requests/s (16 targets per request; targets/s = 16 x requests/s):", ""]
    lines += ["| stage | " + " | ".join(f"L={n}" for n in lengths) + " |"]
    lines += ["|---|" + "---|" * len(lengths)]
    for s in stages:
        cells = [f"{by[(s, n)]['requests_per_s']:,.0f}" if (s, n) in by else "–" for n in lengths]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "Bytes stored per target, request-level (RLB) against pointwise:", ""]
    lines += ["| history | targets | RLB plain | pointwise plain | RLB zstd | pointwise zstd "
              "(adjacent) | pointwise zstd (dispersed) | RLB / pointwise (zstd, dispersed) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in st:
        lines.append(
            f"| {r['length']} | {r['targets']} | {r['plain_rlb_per_target']:,.0f} | "
            f"{r['plain_pointwise_per_target']:,.0f} | {r['zstd_rlb_per_target']:,.0f} | "
            f"{r['zstd_pointwise_per_target']:,.0f} | "
            f"{r['zstd_pointwise_dispersed_per_target']:,.0f} | "
            f"{r['zstd_ratio_dispersed']:.3f} |"
        )
    su = [r for r in payload["results"] if r["part"] == "startup"]
    if su:
        what = {"footers": "reader start-up, no manifest (every footer read)",
                "manifest": "reader start-up with `_manifest.json`",
                "index": "writing the manifest (`python -m longseq.data.index`)"}  # fmt: skip
        lines += ["", f"Reader start-up on {su[0]['files']:,} small files "
                  f"({su[0]['row_groups']:,} row groups; median seconds, page cache warm):", "",
                  "| stage | seconds | best |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {what[r['stage']]} | {r['seconds']:.3f} | {r['best_s']:.3f} |" for r in su]
        speedup = payload["summary"].get("startup_speedup")
        lines += ["", f"Start-up speed-up with the manifest: {speedup:.1f}x"] if speedup else []
    lines += ["", f"Command: `{payload['command']}`"]
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], axes: Any) -> None:
    """Left: requests/s per stage and history length; right: stored bytes per target."""
    ax_t, ax_b = axes
    tp = [r for r in payload["results"] if r["part"] == "throughput"]
    for stage in dict.fromkeys(r["stage"] for r in tp):
        rows = sorted((r for r in tp if r["stage"] == stage), key=lambda r: r["length"])
        ax_t.plot([r["length"] for r in rows], [r["requests_per_s"] for r in rows], "o-",
                  label=stage)  # fmt: skip
    ax_t.set(xscale="log", yscale="log", xlabel="history length", ylabel="requests/s")
    su = payload["summary"].get("startup_s")
    if su:
        ax_t.set_title(f"reader start-up: {su['footers']:.2f} s, {su['manifest']:.3f} s with the "
                       "manifest", fontsize=8)  # fmt: skip
    st = sorted((r for r in payload["results"] if r["part"] == "stored"), key=lambda r: r["length"])
    xs = [r["length"] for r in st]
    for key, label in [
        ("zstd_rlb_per_target", "RLB zstd"),
        ("zstd_pointwise_per_target", "pointwise zstd, adjacent"),
        ("zstd_pointwise_dispersed_per_target", "pointwise zstd, dispersed"),
    ]:
        ax_b.plot(xs, [r[key] for r in st], "o-", label=label)  # fmt: skip
    ax_b.set(xscale="log", yscale="log", xlabel="history length", ylabel="bytes per target")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
