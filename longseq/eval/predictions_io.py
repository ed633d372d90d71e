"""``predictions.parquet``: one row per (target, task, window), so anyone can recompute metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longseq.eval.predict import Predictions


def write_predictions(
    path: str | Path, preds: list[tuple[int | None, Predictions]], tasks: list[str]
) -> None:
    """Write rows ``request_id, user_id, target_index, task, window, label, score``."""
    tables = []
    for window, p in preds:
        n = p.request_id.size
        for k, task in enumerate(tasks):
            w = np.full(n, -1 if window is None else window, dtype=np.int64)
            if window is None:
                w = p.served_len.astype(np.int64)
            tables.append(
                pa.table(
                    {
                        "request_id": p.request_id,
                        "user_id": p.user_id,
                        "target_index": p.target_index.astype(np.int32),
                        "task": pa.array([task] * n),
                        "window": w,
                        "label": p.labels[:, k].astype(np.float32),
                        "score": p.scores[:, k].astype(np.float32),
                    }
                )
            )
    pq.write_table(pa.concat_tables(tables), path)
