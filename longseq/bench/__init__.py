"""Benchmarks that make the paper's cost claims measurable (issue 7).

    python -m longseq.bench suite=<name|all> quick=<true|false> \
        device=<cpu|cuda> out=<dir> [dtype=bf16|fp32] [report=docs/benchmarks.md]

Suites (one module each, registered in `longseq.bench.suites.SUITES`): `scaling` (cost per
target against history length: STCA, Transformer, DIN), `rlb` (request-level against pointwise
batching: throughput and bytes), `kernel` (the attention step against measured copy and matmul
ceilings), `serve` (one request, K candidates), `reader` (the data pipeline), `trainer` (the real
trainer, 2 processes). Each writes ``<out>/<suite>.json`` and ``<out>/<suite>.png``;
`longseq.bench.report` turns result folders into ``docs/benchmarks.md``. Only `rlb`, `reader`
and `trainer` import torchrec or pyarrow; the others are plain torch.
Importing this package loads nothing heavy.
"""
