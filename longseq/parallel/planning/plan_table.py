"""Size a job before paying for it: TorchRec's planner over declared clusters, as a table.

    python -m longseq.train.plan_table [experiment=default] [worlds=[8,64,256]] [out=docs/planning.md]

(the entry point, `longseq.train.plan_table`, composes the training experiment and calls
`plan_table` here). For each data set's table sizes and each declared world size
(``gpus_per_node`` GPUs of ``hbm_gb`` each per node), the experiment's model is built on the meta device (no table memory) and
TorchRec's `EmbeddingShardingPlanner` plans its tables, with the pooling factors (ids per request
and feature) the experiment's data settings imply. The table reports, per world size: the chosen
sharding per table; TorchRec's own estimates, read from the planner's chosen sharding options:
the largest per-rank HBM of the tables (weights + optimizer state, plus TorchRec's reservations),
and the largest per-rank embedding time per step split into compute and communication; and the
all-to-all bytes per rank per step of the sparse lookups, counted from the plan (ids out,
embeddings back, their gradients out again). No GPU and no data set are needed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from longseq.data.config import DataConfig
from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel
from longseq.parallel.sharding import ShardingConfig, find_embedding_collection, make_planner

#: Table sizes of the data sets the table is made for (``num_items, num_categories, num_actions``).
DATA_SETS: dict[str, list[int]] = {
    # the generator's `default` preset: 1,000 categories x 100 items, 4 action types
    "default preset": [100_000, 1_000, 4],
    # KuaiRand-27K: ~32M videos (the dataset's own count); categories = first tag of a video,
    # at most a few hundred in the tag vocabulary (1,000 assumed here: the table is small either
    # way); 8 feedback bits packed into the action -> 256 actions
    "KuaiRand-27K": [32_000_000, 1_000, 256],
}


class PlannedJob(Protocol):
    """What the planner reads of a training job (`longseq.train.config.TrainJobConfig` is one):
    the model (embedding dim, tables), the sharding settings and the data settings (window,
    history cap, requests per rank per step)."""

    model: Any
    sharding: ShardingConfig
    data: DataConfig


@dataclass
class PlanTableConfig:
    """Config of ``python -m longseq.train.plan_table`` (registered as ``plan_table_schema``).

    Attributes:
        experiment: the training experiment whose model, data and sharding settings are planned.
        worlds: total GPU counts to plan for (multiples of ``gpus_per_node``, or fewer).
        gpus_per_node / hbm_gb: the declared node.
        data_sets: name -> ``[num_items, num_categories, num_actions]``.
        targets_per_request: candidates per request (the `default` preset has 16).
        out: write the markdown here (empty: print it).
    """

    experiment: str = "default"
    worlds: list[int] = field(default_factory=lambda: [8, 64, 256])
    gpus_per_node: int = 8
    hbm_gb: float = 80.0
    data_sets: dict[str, list[int]] = field(default_factory=lambda: dict(DATA_SETS))
    targets_per_request: int = 16
    out: str = ""


def ids_per_request(job: PlannedJob, cfg: PlanTableConfig) -> tuple[float, float]:
    """(history events, targets) per request in training: the window's mean for ``beta``
    windows, its cap otherwise (``data.max_hist_len`` or the window's ``l_max``)."""
    w = job.data.window
    hist = float(w.l_avg if w.mode == "beta" else (job.data.max_hist_len or w.l_max))
    return hist, float(cfg.targets_per_request)


def _a2a_bytes(kind: str, ids: float, dim: int, world: int, col_shards: int) -> float:
    """Bytes one rank sends plus receives per step for ``ids`` lookups of one table (average
    over ranks): int64 ids to the owners, fp32 rows back, their gradients to the owners again."""
    if kind == "data_parallel" or world == 1:
        return 0.0
    remote = (world - 1) / world
    fanout = col_shards if kind == "column_wise" else 1
    return ids * remote * (8 * fanout + 2 * 4 * dim)


def plan_rows(job: PlannedJob, sizes: TableSizes, cfg: PlanTableConfig) -> list[dict[str, Any]]:
    """One row per world size: plan, TorchRec's per-rank estimates, all-to-all bytes."""
    hist, tgt = ids_per_request(job, cfg)
    batch = job.data.batch_size
    rows = []
    for world in cfg.worlds:
        model = LongSeqModel(job.model, sizes, ["click"], device="meta")
        path, ec = find_embedding_collection(model)
        pooling = {
            c.name: [tgt if f.startswith("tgt_") else hist for f in c.feature_names]
            for c in ec.embedding_configs()
        }
        planner, sharders = make_planner(
            ec, job.sharding, world, "cuda", min(world, cfg.gpus_per_node), cfg.hbm_gb,
            batch_size=batch, pooling_factors=pooling,
        )  # fmt: skip
        plan = planner.plan(model, sharders)
        options = planner._best_plan or []  # noqa: SLF001 - the chosen options (torchrec 1.8)
        hbm: dict[int, float] = defaultdict(float)
        comp: dict[int, float] = defaultdict(float)
        comm: dict[int, float] = defaultdict(float)
        for so in options:
            for sh in so.shards:
                hbm[sh.rank] += sh.storage.hbm if sh.storage else 0
                if sh.perf:
                    comp[sh.rank] += sh.perf.fwd_compute + sh.perf.bwd_compute
                    comm[sh.rank] += sh.perf.fwd_comms + sh.perf.bwd_comms
        kinds, a2a = {}, 0.0
        for c in ec.embedding_configs():
            ps = plan.plan[path][c.name]
            kinds[c.name] = ps.sharding_type
            n_ids = batch * sum(pooling[c.name])
            shards = len(ps.ranks or [0])
            a2a += _a2a_bytes(ps.sharding_type, n_ids, c.embedding_dim, world, shards)
        busiest = max(range(world), key=lambda r: comp[r] + comm[r])
        rows.append(
            {
                "world": world,
                "plan": kinds,
                "hbm_gb_max": max(hbm.values(), default=0.0) / 1024**3,
                "ms_compute": comp[busiest],
                "ms_comms": comm[busiest],
                "a2a_mb_per_rank": a2a / 1024**2,
            }
        )
    return rows


def _fmt_plan(plan: dict[str, str]) -> str:
    short = {"row_wise": "RW", "table_wise": "TW", "column_wise": "CW", "data_parallel": "DP"}
    return ", ".join(f"{t} {short.get(k, k)}" for t, k in plan.items())


def markdown(job: PlannedJob, cfg: PlanTableConfig, tables: dict[str, list[dict]]) -> str:
    """The page: how it was made, then one table per data set."""
    hist, tgt = ids_per_request(job, cfg)
    lines = [
        "# Planning a cluster: TorchRec's planner over declared topologies",
        "",
        "Generated by `python -m longseq.train.plan_table "
        f"experiment={cfg.experiment} out=docs/planning.md` (edit "
        "`longseq/parallel/planning/plan_table.py`, not this file). No GPU is used: the model is built on the meta device and TorchRec's "
        f"`EmbeddingShardingPlanner` plans it for nodes of {cfg.gpus_per_node} GPUs with "
        f"{cfg.hbm_gb:g} GB each, with `experiment={cfg.experiment}`'s model "
        f"(embedding dim {job.model.embedding_dim}), {job.data.batch_size} requests per rank per "
        f"step, {hist:g} history events and {tgt:g} targets per request.",
        "",
        "Columns: the plan per table (RW row-wise, TW table-wise, CW column-wise, DP data "
        "parallel); TorchRec's estimates for the busiest rank: embedding HBM (weights, optimizer "
        "state and its reservations) and the embedding time per step, compute and communication "
        "(its perf model, in ms); and the all-to-all bytes per rank per step counted from the "
        "plan (int64 ids to the owning ranks, fp32 rows back, gradients to the owners again; "
        "average over ranks; a data-parallel table has none, its gradients are all-reduced "
        "instead, which only TorchRec's comms estimate counts). Dense parameters are not "
        "included (a few MB at these sizes). Only the planner's estimates: nothing here was "
        "run on a cluster.",
    ]
    for name, rows in tables.items():
        s = cfg.data_sets[name]
        lines += [
            "",
            f"## {name}: {s[0]:,} items, {s[1]:,} categories, {s[2]:,} actions",
            "",
            "| GPUs | plan | HBM max (GB) | compute (ms) | comms (ms) | all-to-all (MB/rank/step) |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['world']} | {_fmt_plan(r['plan'])} | {r['hbm_gb_max']:.2f} | "
                f"{r['ms_compute']:.2f} | {r['ms_comms']:.2f} | {r['a2a_mb_per_rank']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def check(cfg: PlanTableConfig) -> None:
    """Raise ``ValueError`` naming the key for world sizes or table sizes that cannot be planned."""
    if not cfg.worlds or min(cfg.worlds) < 1:
        raise ValueError(f"worlds={list(cfg.worlds)}: give world sizes >= 1")
    for name, s in cfg.data_sets.items():
        if len(s) != 3 or min(s) < 1:
            raise ValueError(
                f"data_sets.{name}={list(s)}: [num_items, num_categories, num_actions]"
            )


def plan_table(cfg: PlanTableConfig, job: PlannedJob) -> str:
    """Plan ``job`` for every data set at every world size; return (and write to ``cfg.out``,
    when set) the markdown. ``job.sharding.planner`` should be on: the table is TorchRec's plan."""
    check(cfg)
    quiet = [logging.getLogger(), logging.getLogger("torchrec")]
    levels = [q.level for q in quiet]
    for q in quiet:  # the planner warns about dry runs and unsharded specs at every plan
        q.setLevel(logging.ERROR)
    try:
        tables = {
            name: plan_rows(job, TableSizes(*map(int, s)), cfg) for name, s in cfg.data_sets.items()
        }
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    text = markdown(job, cfg, tables)
    if cfg.out:
        Path(cfg.out).write_text(text)
    return text
