"""The benchmark suites, registered once: name -> where its code is and how it is reported.

Read by ``python -m longseq.bench`` (the ``suite=`` choices and the order of ``suite=all``), by
the report generator (`longseq.bench.report`: which result files exist, section order and
titles) and by the plots (`longseq.bench.plots`). Every function is named as
``"module:function"`` and imported on first use, so importing this table loads nothing heavy
(only ``rlb``, ``reader``, ``trainer`` and the ``feat_*`` suites load torchrec or pyarrow, and only when they run).

How to add one: write ``longseq/bench/<name>.py`` with ``run(args: BenchArgs) -> payload`` (build
the payload with `longseq.bench.common.result_payload`), a markdown renderer and a plotter
(``render(payload) -> str``, ``plot(payload, axes)``), then add one `Suite` entry to `SUITES`.
``suite=<name>``, ``suite=all``, its report section and its figure then follow; the tests in
``tests/bench/test_bench.py`` run every entry on tiny shapes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Suite:
    """One benchmark suite.

    Attributes:
        title: its section title in ``docs/benchmarks.md``.
        stage: when ``suite=all`` runs it (lower first; ties in table order): torch-only suites
            first, then those that load torchrec, the real trainer last.
        run: ``"module:function"`` measuring it: ``run(args) -> payload``.
        render: ``"module:function"`` turning a payload into the section's markdown.
        plot: ``"module:function"`` drawing a payload on two matplotlib axes.
    """

    title: str
    stage: int
    run: str
    render: str
    plot: str


#: every suite, in report order (``suite=all`` runs them by `Suite.stage`)
SUITES: dict[str, Suite] = {
    "scaling": Suite(
        "Cost per target against history length (STCA, Transformer, DIN)",
        0,
        "longseq.bench.scaling:run",
        "longseq.bench.report:scaling_md",
        "longseq.bench.plots:plot_scaling",
    ),
    "rlb": Suite(
        "Request-level against pointwise batching",
        2,
        "longseq.bench.rlb:run",
        "longseq.bench.report:rlb_md",
        "longseq.bench.plots:plot_rlb",
    ),
    "trainer": Suite(
        "End-to-end trainer (2 processes): request-level against pointwise batching",
        3,
        "longseq.bench.trainer:run",
        "longseq.bench.trainer:render",
        "longseq.bench.trainer:plot",
    ),
    "kernel": Suite(
        "The attention step against measured ceilings",
        0,
        "longseq.bench.kernel:run",
        "longseq.bench.report:kernel_md",
        "longseq.bench.plots:plot_kernel",
    ),
    "serve": Suite(
        "Serving one request with K candidates",
        0,
        "longseq.bench.serve:run",
        "longseq.bench.report:serve_md",
        "longseq.bench.plots:plot_serve",
    ),
    "packed": Suite(
        "Serving a batch of ragged requests: packed (FlexAttention) against padded",
        0,
        "longseq.bench.packed:run",
        "longseq.bench.packed:render",
        "longseq.bench.packed:plot",
    ),
    "reader": Suite(
        "Data pipeline: reader requests/s and stored bytes per target (RLB vs pointwise)",
        1,
        "longseq.bench.reader:run",
        "longseq.bench.reader:render",
        "longseq.bench.reader:plot",
    ),
    "eval_scale": Suite(
        "Evaluation metrics over N processes: distributed against gathered on rank 0",
        0,
        "longseq.bench.eval_scale:run",
        "longseq.bench.eval_scale:render",
        "longseq.bench.eval_scale:plot",
    ),
    "feat_bytes": Suite(
        "Side features: bytes per target with and without user features (RLB vs pointwise)",
        1,
        "longseq.bench.feat_bytes:run",
        "longseq.bench.feat_bytes:render",
        "longseq.bench.feat_bytes:plot",
    ),
    "feat_step": Suite(
        "Side features and RankMixer: their share of the training step at long1k shapes",
        2,
        "longseq.bench.feat_step:run",
        "longseq.bench.feat_step:render",
        "longseq.bench.feat_step:plot",
    ),
    "replay": Suite(
        "Returning users: the incremental user-state cache against re-encoding every request",
        2,
        "longseq.bench.replay:run",
        "longseq.bench.replay:render",
        "longseq.bench.replay:plot",
    ),
}


def run_order() -> tuple[str, ...]:
    """The suites in the order ``suite=all`` runs them."""
    names = list(SUITES)
    return tuple(sorted(names, key=lambda n: (SUITES[n].stage, names.index(n))))


def suite_function(suite: str, part: str) -> Callable[..., Any]:
    """The ``run``, ``render`` or ``plot`` function of ``suite`` (imported now)."""
    module, _, name = getattr(SUITES[suite], part).partition(":")
    return getattr(importlib.import_module(module), name)
