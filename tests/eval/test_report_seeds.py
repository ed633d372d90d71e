"""`longseq.report.seeds`: mean ± std over ``<model>_s<seed>`` runs, and its CLI."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from longseq.report.seeds import collect, render, summarise

REPO = Path(__file__).resolve().parents[2]


def _eval(run: Path, auc: float, windows=(50, 1000), task: str = "like") -> None:
    rows = [
        {"task": task, "window": w, "auc": auc - (0.01 if w < max(windows) else 0.0),
         "gauc": auc - 0.02, "nll": 1.0 - auc}
        for w in windows
    ]  # fmt: skip
    (run / "eval_test").mkdir(parents=True)
    (run / "eval_test" / "eval.json").write_text(json.dumps({"step": 7, "results": rows}))


def test_mean_and_sample_std_per_model(tmp_path: Path):
    aucs = {"stca": [0.74, 0.75, 0.77], "din_last50": [0.73, 0.74]}
    for model, vals in aucs.items():
        for seed, a in enumerate(vals):
            _eval(tmp_path / f"{model}_s{seed}", a)
    (tmp_path / "stca_s9").mkdir()  # unfinished: no eval file, skipped
    (tmp_path / "notes").mkdir()  # not a <model>_s<seed> folder
    rows = collect(tmp_path, "eval_test")
    assert len(rows) == 5 and {r.window for r in rows} == {1000}
    by = {s.model: s for s in summarise(rows)}
    assert by["stca"].seeds == [0, 1, 2]
    assert by["stca"].mean["auc"] == pytest.approx(statistics.fmean(aucs["stca"]))
    assert by["stca"].std["auc"] == pytest.approx(statistics.stdev(aucs["stca"]))
    assert by["din_last50"].std["nll"] == pytest.approx(statistics.stdev([0.27, 0.26]))
    md = render(list(by.values()))
    assert "| stca | 0,1,2 | 1000 | **0.7533 ± 0.0153** |" in md
    assert collect(tmp_path, "eval_test", window=50)[0].metrics["auc"] == pytest.approx(0.72)


def test_bad_inputs_name_the_file_and_key(tmp_path: Path):
    _eval(tmp_path / "stca_s0", 0.7)
    with pytest.raises(ValueError, match="task='click' not evaluated"):
        collect(tmp_path, "eval_test", task="click")
    with pytest.raises(ValueError, match="window=77 not evaluated"):
        collect(tmp_path, "eval_test", window=77)
    (tmp_path / "stca_s1" / "eval_test").mkdir(parents=True)
    (tmp_path / "stca_s1" / "eval_test" / "eval.json").write_text("{not json")
    with pytest.raises(ValueError, match="stca_s1/eval_test/eval.json: unreadable"):
        collect(tmp_path, "eval_test")
    with pytest.raises(FileNotFoundError, match="runs="):
        collect(tmp_path / "absent")


def test_cli_writes_table_and_json(tmp_path: Path):
    for seed, a in enumerate([0.70, 0.72]):
        _eval(tmp_path / "runs" / f"pooling_s{seed}", a)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "longseq.report.seeds", f"runs={tmp_path / 'runs'}",
           "eval=eval_test", f"out={out}", "title='ML: test'"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "#### ML: test" in proc.stdout and "0.7100 ± 0.0141" in proc.stdout
    doc = json.loads((out / "seeds.json").read_text())
    assert doc["models"][0]["seeds"] == [0, 1] and len(doc["runs"]) == 2
    empty = subprocess.run(
        [sys.executable, "-m", "longseq.report.seeds", f"runs={tmp_path}", f"out={out}"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert empty.returncode == 2 and "no <model>_s<seed>/eval/eval.json" in empty.stderr
