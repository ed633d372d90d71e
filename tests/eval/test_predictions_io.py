"""``predictions.parquet/``: one part per rank, windows appended, read back whole; and no
evaluation code gathers predictions any more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from longseq.eval.predict import Predictions
from longseq.eval.predictions_io import (
    PredictionWriter,
    part_path,
    prepare_folder,
    write_predictions,
)

TASKS = ["click", "buy"]


def _preds(n: int, offset: int) -> Predictions:
    rng = np.random.default_rng(n + offset)
    return Predictions(
        request_id=np.arange(n) // 2 + offset,
        user_id=np.arange(n) // 4 + offset,
        target_index=np.arange(n) % 2,
        labels=rng.integers(0, 2, (n, 2)).astype(np.float32),
        scores=rng.random((n, 2)).astype(np.float32),
        served_len=np.arange(n) + 1,
        batch_index=np.arange(n) // 8,
    )


def test_one_part_per_rank_read_back_whole(tmp_path: Path):
    folder = tmp_path / "predictions.parquet"
    folder.write_text("a file an older version wrote")
    prepare_folder(folder)
    shares = {0: _preds(10, 0), 1: _preds(6, 1000), 2: _preds(0, 0)}  # rank 2 scored nothing
    for rank, p in shares.items():
        w = PredictionWriter(folder, rank, TASKS)
        w.write(16, p)
        w.write(None, p)  # full history: the served length per request
        w.close()
    assert sorted(f.name for f in folder.iterdir()) == [part_path(folder, r).name for r in shares]
    t = pq.read_table(folder)
    assert t.num_rows == 2 * 2 * (10 + 6)  # windows x tasks x targets
    assert t.schema.names == [
        "request_id", "user_id", "target_index", "task", "window", "label", "score"
    ]  # fmt: skip
    one = pq.read_table(part_path(folder, 1)).to_pydict()
    p = shares[1]
    assert one["request_id"][:6] == p.request_id.tolist()
    assert one["task"] == ["click"] * 6 + ["buy"] * 6 + ["click"] * 6 + ["buy"] * 6
    assert one["window"] == [16] * 12 + p.served_len.tolist() * 2
    assert np.array_equal(one["score"][6:12], p.scores[:, 1])
    assert np.array_equal(one["label"][:6], p.labels[:, 0])


def test_a_new_evaluation_replaces_the_old_parts(tmp_path: Path):
    folder = tmp_path / "predictions.parquet"
    prepare_folder(folder)
    for rank in range(3):  # an evaluation with 3 ranks
        PredictionWriter(folder, rank, TASKS).close()
    write_predictions(folder, [(8, _preds(4, 0))], TASKS)  # then one process
    assert [f.name for f in folder.iterdir()] == [part_path(folder, 0).name]
    assert pq.read_table(folder).num_rows == 8


def test_no_evaluation_code_gathers_predictions():
    root = Path(__file__).resolve().parents[2] / "longseq"
    for f in [*(root / "eval").rglob("*.py"), root / "train" / "eval_callback.py"]:
        assert "gather_object" not in f.read_text(), f
