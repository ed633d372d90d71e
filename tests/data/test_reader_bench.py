"""The ``reader`` benchmark suite runs (tiny shapes) and renders; its byte counts are measured."""

from __future__ import annotations

from longseq.bench.config import parse_args
from longseq.bench.reader import render, run


def test_reader_suite_tiny_runs_and_renders():
    payload = run(parse_args(["tiny=true", "reps=1", "warmup=0"]))
    tp = [r for r in payload["results"] if r["part"] == "throughput"]
    assert {r["stage"] for r in tp} == {"parquet", "reader", "collate", "stream_w0", "stream_w1"}
    assert all(r["requests_per_s"] > 0 for r in tp)
    (stored,) = [r for r in payload["results"] if r["part"] == "stored"]
    # 16 targets: the pointwise layout repeats the history 16 times
    assert stored["plain_pointwise_per_target"] > 8 * stored["plain_rlb_per_target"]
    startup = {r["stage"]: r for r in payload["results"] if r["part"] == "startup"}
    assert set(startup) == {"footers", "manifest", "index"}
    assert {(r["files"], r["row_groups"]) for r in startup.values()} == {(50, 100)}
    assert payload["summary"]["startup_speedup"] > 0
    md = render(payload)
    assert "| reader |" in md and "RLB / pointwise" in md and payload["command"] in md
    assert "Reader start-up on 50 small files" in md and "speed-up with the manifest" in md
