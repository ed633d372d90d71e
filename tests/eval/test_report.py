"""``python -m longseq.report``: config differences and metrics tables of evaluated runs.

The eval.json files are assembled from the evaluator's own per-window code
(``longseq.eval.evaluate.window_metrics`` / ``oracle_at`` on synthetic predictions), the config
files in the layouts the trainer writes (``config.yaml`` via OmegaConf, the checkpoint's
``longseq.json``).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from longseq.eval.evaluate import markdown_table, oracle_at, window_metrics
from longseq.eval.predict import Predictions
from longseq.report.compare import collect, config_diff, write_report

WINDOWS = [16, 64, 256]
ORACLE = {
    "task": "click",
    "hist_len_max": 256,
    "windows": [{"window": w, "auc": 0.6 + w / 1000, "gauc": 0.59 + w / 1000} for w in (16, 64)],
    "p_true": {"auc": 0.8, "gauc": 0.79},
}
TRAIN_CONFIG: dict[str, Any] = {
    "name": "run",
    "run_dir": "?",
    "resume": "none",
    "seed": 0,
    "data": {
        "path": "/data/a",
        "batch_size": 32,
        "pointwise": False,
        "window": {"mode": "beta", "length": 0, "l_min": 16, "l_max": 256, "l_avg": 64},
        "split": "train",
    },
    "model": {"embedding_dim": 32, "stca": {"d_model": 64, "num_layers": 2}, "head_hidden": [8]},
    "trainer": {"max_steps": 100, "log_every": 10, "dense": {"lr": 0.003, "betas": [0.9, 0.98]}},
    "wandb": {"mode": "disabled", "project": "longseq", "entity": None},
}


def _eval_result(ckpt: Path, seed: int, windows: list[int] = WINDOWS) -> dict[str, Any]:
    """An eval.json dict as ``longseq.eval.evaluate.evaluate`` assembles it."""
    rng = np.random.default_rng(seed)
    results = []
    for w in windows:
        n = 400
        labels = rng.integers(0, 2, (n, 1)).astype(np.float32)
        p = Predictions(
            request_id=np.arange(n) // 4,
            user_id=np.arange(n) // 8,
            target_index=np.arange(n) % 4,
            labels=labels,
            scores=np.clip(0.3 * labels + rng.random((n, 1)) * 0.7, 0, 1),
            served_len=np.full(n, min(w, 100)),
            batch_index=np.arange(n) // 64,
        )
        for r in window_metrics(p, ["click"]):
            r["window"] = w
            r["oracle"] = oracle_at(ORACLE, w)
            results.append(r)
    return {
        "checkpoint": str(ckpt),
        "step": 100,
        "data": "/data/a",
        "split": "test",
        "tasks": ["click"],
        "train_window": TRAIN_CONFIG["data"]["window"],
        "results": results,
        "oracle": {
            "p_true": ORACLE["p_true"],
            "short_window": ORACLE["windows"][0],
            "windows": ORACLE["windows"],
        },
    }


def _run_dir(root: Path, name: str, config: dict[str, Any] | None, **meta: Any) -> Path:
    """A run folder: ``config.yaml`` (if given) and ``checkpoints/step_100/longseq.json``."""
    run = root / name
    ckpt = run / "checkpoints" / "step_100"
    ckpt.mkdir(parents=True)
    cfg = config or TRAIN_CONFIG
    info = {
        "model": cfg["model"],
        "tables": {"num_items": 400, "num_categories": 20, "num_actions": 4},
        "tasks": ["click"],
        "world_size": 2,
        "data_path": str(root / f"data_{name}"),
        "window": cfg["data"]["window"],
        "pointwise": False,
        "wandb_run_id": None,
        "step": 100,
        **meta,
    }
    (ckpt / "longseq.json").write_text(json.dumps(info, indent=2))
    if config is not None:
        OmegaConf.save(
            OmegaConf.create({**config, "run_dir": str(run), "name": name}), run / "config.yaml"
        )
    return run


def _write_eval(folder: Path, result: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / "eval.json").write_text(json.dumps(result, indent=2))
    return folder


def _two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Run A (run folder with eval/ and eval_long/) and run B's eval folder (outside its run)."""
    a = _run_dir(tmp_path, "runA", TRAIN_CONFIG)
    b_cfg = copy.deepcopy(TRAIN_CONFIG)
    b_cfg["model"]["stca"]["num_layers"] = 4
    b_cfg["data"]["window"]["l_avg"] = 128
    b_cfg["trainer"]["dense"]["lr"] = 0.001
    b_cfg["data"]["path"] = "/data/b"  # ignored, as are run_dir and name
    b_cfg["trainer"]["log_every"] = 5
    b_cfg["wandb"]["mode"] = "offline"
    b = _run_dir(tmp_path, "runB", b_cfg)
    _write_eval(a / "eval", _eval_result(a / "checkpoints" / "step_100", 1))
    _write_eval(a / "eval_long", _eval_result(a / "checkpoints" / "step_100", 2, [1024]))
    eval_b = _write_eval(tmp_path / "evalB", _eval_result(b / "checkpoints" / "step_100", 3))
    return a, eval_b


def test_eval_json_fixture_matches_the_evaluator_format(tmp_path: Path) -> None:
    assert "| 16 |" in markdown_table(_eval_result(tmp_path, 0))


def test_config_diff_lists_exactly_the_differing_keys(tmp_path: Path) -> None:
    a, eval_b = _two_runs(tmp_path)
    runs = collect([str(a), str(eval_b)])
    assert [r.label for r in runs] == ["runA/eval", "runA/eval_long", "evalB"]
    assert all(len(r.config_sources) == 2 for r in runs)  # longseq.json + config.yaml
    diff = config_diff([runs[0], runs[2]])
    assert diff == {
        "data.window.l_avg": {"runA/eval": 64, "evalB": 128},
        "model.stca.num_layers": {"runA/eval": 2, "evalB": 4},
        "trainer.dense.lr": {"runA/eval": 0.003, "evalB": 0.001},
    }
    assert config_diff(runs[:2]) == {}  # two evals of the same run


def test_config_from_checkpoint_metadata_only(tmp_path: Path) -> None:
    """Without config.yaml, longseq.json's keys are compared (mapped to the config layout)."""
    cfg = copy.deepcopy(TRAIN_CONFIG)
    cfg["model"]["embedding_dim"] = 64
    x = _run_dir(tmp_path, "x", None)
    y = _run_dir(tmp_path, "y", None, model=cfg["model"], world_size=4)
    ex = _write_eval(tmp_path / "ex", _eval_result(x / "checkpoints" / "step_100", 1))
    ey = _write_eval(tmp_path / "ey", _eval_result(y / "checkpoints" / "step_100", 2))
    runs = collect([str(ex), str(ey / "eval.json")], labels=["X", "Y"])
    assert runs[0].config["data.window.l_avg"] == 64  # "window" lives under data.window
    assert config_diff(runs) == {
        "model.embedding_dim": {"X": 32, "Y": 64},
        "world_size": {"X": 2, "Y": 4},
    }


def test_metrics_table_numbers_and_cli(tmp_path: Path) -> None:
    a, eval_b = _two_runs(tmp_path)
    out = tmp_path / "report"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "longseq.report", f"inputs=[{a},{eval_b}]", f"out={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    assert proc.stdout == md
    assert (out / "report.png").stat().st_size > 1000
    rep = json.loads((out / "report.json").read_text())
    assert rep["windows"] == [16, 64, 256, 1024]
    assert sorted(rep["config_diff"]) == [
        "data.window.l_avg", "model.stca.num_layers", "trainer.dense.lr",
    ]  # fmt: skip
    res = {
        lb: {r["window"]: r for r in json.loads(f.read_text())["results"]}
        for lb, f in (("runA/eval", a / "eval" / "eval.json"), ("evalB", eval_b / "eval.json"))
    }
    lines = md.splitlines()
    for lb, by_w in res.items():
        cells = []
        for w in (16, 64, 256, 1024):
            r = by_w.get(w)
            cells += [f"{r[k]:.4f}" for k in ("auc", "gauc", "nll")] if r else ["-"] * 3
        assert f"| {lb} | " + " | ".join(cells) + " |" in lines, md
    # w >= 64 use the largest oracle window <= w, capped at the data's longest history (64 here)
    oracle = "| oracle ceiling | 0.6160 | 0.6060 | - |" + " 0.6640 | 0.6540 | - |" * 3
    assert oracle in lines, md
    assert "p_true): AUC 0.8000, GAUC 0.7900" in md
    assert "runA/eval@256: 100.0" in md  # fewer events served than the window
    missing = subprocess.run(
        [*cmd[:3], f"inputs=[{tmp_path / 'nothing'}]", f"out={out}"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert missing.returncode == 2 and "no eval.json" in missing.stderr


def test_write_report_without_plot(tmp_path: Path) -> None:
    a, _ = _two_runs(tmp_path)
    rep, md = write_report([str(a)], tmp_path / "o", plot=False)
    assert not (tmp_path / "o" / "report.png").exists()
    assert [r["label"] for r in rep["runs"]] == ["runA/eval", "runA/eval_long"]
    assert "No differences." in md
