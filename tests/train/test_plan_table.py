"""Planning without a cluster (`longseq.parallel.planning`): ``python -m longseq.train.plan_table``
(TorchRec's planner over declared clusters, as a page) and the ``dry_run=true`` report."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from longseq.model.embeddings import TableSizes
from longseq.parallel.planning.dry_run import dry_run
from longseq.parallel.planning.plan_table import PlanTableConfig, _a2a_bytes
from longseq.parallel.planning.topology import TopologyConfig
from longseq.train.plan_table import compose_job, run


def test_all_to_all_bytes_count_ids_rows_and_gradients():
    # 1,000 lookups of a 64-wide table over 4 ranks: 3/4 are remote; 8 B per id, 256 B per row
    # forward and 256 B per gradient row backward
    assert _a2a_bytes("row_wise", 1000, 64, 4, 1) == pytest.approx(1000 * 0.75 * (8 + 512))
    assert _a2a_bytes("column_wise", 1000, 64, 4, 2) == pytest.approx(1000 * 0.75 * (16 + 512))
    assert _a2a_bytes("data_parallel", 1000, 64, 4, 4) == 0.0
    assert _a2a_bytes("row_wise", 1000, 64, 1, 1) == 0.0


def test_the_page_plans_every_table_at_every_world_size(tmp_path):
    out = tmp_path / "planning.md"
    cfg = PlanTableConfig(
        experiment="ci", worlds=[2, 8], data_sets={"small": [5000, 20, 4]}, out=str(out)
    )
    text = run(cfg)
    assert out.read_text() == text
    rows = [
        line for line in text.splitlines() if line.startswith("| 2 ") or line.startswith("| 8 ")
    ]
    assert len(rows) == 2
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert {t.split()[0] for t in cells[1].split(", ")} == {
            "item", "category", "action", "dt_bucket"
        }  # fmt: skip
        assert float(cells[2]) > 0  # TorchRec's HBM estimate of the busiest rank
    assert "5,000 items" in text and "experiment=ci" in text


def test_bad_world_sizes_name_the_key():
    with pytest.raises(ValueError, match=r"worlds=\[0\]"):
        run(PlanTableConfig(worlds=[0]))
    with pytest.raises(ValueError, match=r"data_sets.x="):
        run(PlanTableConfig(data_sets={"x": [1, 2]}))


def test_cli_composes_its_config():
    proc = subprocess.run(
        [sys.executable, "-m", "longseq.train.plan_table", "worlds=[0]"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and "worlds=[0]" in proc.stderr


def test_dry_run_reports_the_plan_and_memory_of_every_rank():
    job = compose_job("tiny")  # sharding.planner=true
    sizes = TableSizes(4_000_000, 20, 4)  # ~0.06 GB of item rows per rank: the report shows it
    topo = TopologyConfig(nodes=1, gpus_per_node=4, hbm_gb=16)
    text = dry_run(job.model, job.sharding, topo, sizes, ["click"])
    assert text.startswith("dry run: 1 nodes x 4 cuda (16 GB each)")
    rows = re.findall(r"^\| (\d+) \| ([0-9.]+) \|$", text, flags=re.M)  # rank | GB
    mem = {int(rank): float(gb) for rank, gb in rows}
    assert sorted(mem) == [0, 1, 2, 3] and sum(mem.values()) > 0
    assert "DDP-replicated" in text
    job.sharding.dense = "fsdp2"
    assert "FSDP2-sharded over 4 ranks" in dry_run(job.model, job.sharding, topo, sizes, ["click"])
