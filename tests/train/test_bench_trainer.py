"""The trainer benchmark suite (longseq/bench/trainer.py) end to end in its tiny mode: two real
2-process trainer runs (RLB, pointwise), numbers read back from their metrics.jsonl."""

from __future__ import annotations

import pytest

from longseq.bench.common import BenchArgs
from longseq.bench.trainer import IDS_RATIO_TARGET, render, run

pytestmark = pytest.mark.e2e


def test_tiny_run_measures_both_layouts_and_renders(tmp_path):
    payload = run(BenchArgs(tiny=True, reps=1, out=str(tmp_path)))
    assert payload["suite"] == "trainer"
    (row,) = payload["results"]
    assert "skipped" not in row, row.get("skipped")
    assert row["length"] == 64 and row["targets"] == 16 and row["world"] == 2
    assert row["rlb_targets_per_s"] > 0 and row["pointwise_targets_per_s"] > 0
    # ids per target from the trainer's own log: 4 history features once per request (RLB)
    # or once per target (pointwise), plus 2 target features per target
    assert row["rlb_input_ids_per_target"] == pytest.approx(4 * 64 / 16 + 2)
    assert row["pointwise_input_ids_per_target"] == pytest.approx(4 * 64 + 2)
    assert row["ids_ratio"] <= IDS_RATIO_TARGET
    assert payload["summary"]["ids_ratio_met"] == {"L=64": True}
    md = render(payload)
    assert md.splitlines()[0].startswith("| L | T | RLB targets/s")
    assert "| 64 | 16 |" in md and "(yes)" in md
