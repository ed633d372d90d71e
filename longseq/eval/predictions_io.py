"""``predictions.parquet/``: one row per (target, task, window), so anyone can recompute metrics.

A folder of Parquet parts, one per rank (``part-00000.parquet`` ... in rank order), each holding
the targets that rank scored, every window appended as it is scored (nothing is gathered or
held). Read it whole with ``pyarrow.parquet.read_table(folder)`` (or pandas/polars on the folder).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longseq.eval.predict import Predictions

SCHEMA = pa.schema(
    [
        ("request_id", pa.int64()),
        ("user_id", pa.int64()),
        ("target_index", pa.int32()),
        ("task", pa.string()),
        ("window", pa.int64()),
        ("label", pa.float32()),
        ("score", pa.float32()),
    ]
)


def part_path(folder: str | Path, rank: int) -> Path:
    """The part rank ``rank`` writes in ``folder``."""
    return Path(folder) / f"part-{rank:05d}.parquet"


def prepare_folder(folder: str | Path) -> None:
    """Remove what an earlier evaluation left at ``folder`` (a file, or parts of more ranks) and
    create it empty. Rank 0 only, before any rank writes."""
    folder = Path(folder)
    if folder.is_dir():
        shutil.rmtree(folder)
    elif folder.exists():
        folder.unlink()
    folder.mkdir(parents=True)


def predictions_table(window: int | None, p: Predictions, tasks: list[str]) -> pa.Table:
    """Rows ``request_id, user_id, target_index, task, window, label, score`` of one window
    (``window``: the served window; None, the full history: each request's served length)."""
    n = p.request_id.size
    if window is None:
        w = p.served_len.astype(np.int64)
    else:
        w = np.full(n, window, dtype=np.int64)
    tables = []
    for k, task in enumerate(tasks):
        cols = {
            "request_id": p.request_id.astype(np.int64),
            "user_id": p.user_id.astype(np.int64),
            "target_index": p.target_index.astype(np.int32),
            "task": pa.array([task] * n, pa.string()),
            "window": w,
            "label": p.labels.reshape(n, len(tasks))[:, k].astype(np.float32),
            "score": p.scores.reshape(n, len(tasks))[:, k].astype(np.float32),
        }
        tables.append(pa.table(cols, schema=SCHEMA))
    return pa.concat_tables(tables)


class PredictionWriter:
    """Appends each window's predictions of this rank to its part (`part_path`).

    Args:
        folder: the ``predictions.parquet`` folder (made empty by `prepare_folder` first).
        rank: this process's rank (0 in one process).
        tasks: the model's tasks.

    Every rank writes a part, an empty one when it scored nothing.
    """

    def __init__(self, folder: str | Path, rank: int, tasks: list[str]) -> None:
        self.tasks = list(tasks)
        self.path = part_path(folder, rank)
        self._writer = pq.ParquetWriter(self.path, SCHEMA)

    def write(self, window: int | None, p: Predictions) -> None:
        """Append the rows of one window."""
        self._writer.write_table(predictions_table(window, p, self.tasks))

    def close(self) -> None:
        """Finish the part (it is unreadable before)."""
        self._writer.close()


def write_predictions(
    path: str | Path, preds: list[tuple[int | None, Predictions]], tasks: list[str]
) -> None:
    """Write the windows ``preds`` of one process as a ``predictions.parquet`` folder."""
    prepare_folder(path)
    w = PredictionWriter(path, 0, tasks)
    for window, p in preds:
        w.write(window, p)
    w.close()
