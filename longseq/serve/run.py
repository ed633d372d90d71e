"""Batch scoring through the serving path: a split -> ``<out>/scores.parquet``.

Reads the split in order with the data pipeline's reader (as the evaluation does), gets every
request's user state from the `UserStateCache` or encodes it, scores its targets (or, with
``packed=true``, scores each batch at once, packed, through FlexAttention), and writes one
row per target: ``request_id, user_id, target_index, score_<task>`` (and ``label_<task>`` when
the split has labels). Prints requests/s and candidates/s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.data.source import check_split
from longseq.data.windows import served_window
from longseq.log import get_logger
from longseq.serve.config import ServeConfig

log = get_logger("longseq.serve")


def history_versions(table: pa.Table) -> list[tuple[int, int, int]]:
    """Per request the cache version of its user state: (stored history length, last event
    time, request time). The request time is part of it because the events' time-delta
    features are measured from it: the same history at another time is another state."""
    col = table.column("hist_ts").combine_chunks()
    lens = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = col.values.to_numpy(zero_copy_only=False)
    ends = col.offsets.to_numpy()[1:] - col.offsets.to_numpy()[0]
    last = flat[np.maximum(ends - 1, 0)] if flat.size else np.zeros_like(lens)
    last = np.where(lens > 0, last, -1)
    req = table.column("request_ts").to_numpy()
    return list(zip(lens.tolist(), np.asarray(last).tolist(), req.tolist(), strict=True))


def serve(cfg: ServeConfig) -> dict[str, Any]:
    """Score ``cfg.data`` with ``cfg.checkpoint``; write ``<out>/scores.parquet``; return the
    throughput summary (also printed). An ``out`` inside a run dir is written under its lock
    (`longseq.parallel.run_lock.writing_inside`)."""
    from longseq.parallel.run_lock import writing_inside

    cfg.validate()
    split_dir = check_split(cfg.data.path, cfg.data.split)
    with writing_inside(cfg.out, "out"):  # not into a run dir another job holds
        return _serve(cfg, split_dir)


def _serve(cfg: ServeConfig, split_dir: Path) -> dict[str, Any]:
    """`serve` after its argument checks, with ``out`` locked if inside a run dir."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from longseq.data.collate import collate
    from longseq.data.reader import RequestReader
    from longseq.eval.ids import check_ids
    from longseq.serve.scorer import Scorer

    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    scorer = Scorer.from_checkpoint(
        cfg.checkpoint, cfg.cache_mb, packed=cfg.packed, match_tables=cfg.match_tables
    )
    check_ids(split_dir, scorer.meta["tables"])
    tasks = scorer.tasks
    reader = RequestReader(split_dir, cfg.data.batch_size, 0, 1, shuffle=False)
    window = served_window(cfg.window)
    cols: dict[str, list[np.ndarray]] = {"request_id": [], "user_id": [], "target_index": []}
    scores, labels = [], []
    total = -(-reader.num_rows() // cfg.data.batch_size)
    bar = tqdm(
        total=total,
        disable=not (cfg.progress and sys.stderr.isatty()),
        desc="serve",
        unit="batch",
        file=sys.stderr,
        dynamic_ncols=True,
    )
    requests = targets = 0
    t0 = time.perf_counter()
    for table in reader:
        labelled = all(f"tgt_{t}" in table.column_names for t in tasks)
        wins = None if window is None else np.full(table.num_rows, window, dtype=np.int64)
        batch = collate(table, tasks if labelled else [], wins, features=scorer.model.features)
        if cfg.packed:  # the whole batch at once, no padding, FlexAttention
            probs = scorer.score_batch(batch).numpy()
        else:
            probs = scorer.score_requests(batch, history_versions(table)).numpy()
        nt = batch.num_targets.numpy()
        cols["request_id"].append(np.repeat(batch.request_ids.numpy(), nt))
        cols["user_id"].append(np.repeat(batch.user_ids.numpy(), nt))
        cols["target_index"].append(np.concatenate([np.arange(n) for n in nt]))
        scores.append(probs)
        labels.append(batch.labels.numpy() if labelled else None)
        requests += batch.batch_size
        targets += int(nt.sum())
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    if requests == 0:
        raise ValueError(f"data.split={cfg.data.split}: no requests in {split_dir}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {k: np.concatenate(v) for k, v in cols.items()}
    score_mat = np.concatenate(scores)
    for k, task in enumerate(tasks):
        data[f"score_{task}"] = score_mat[:, k]
    if all(lab is not None for lab in labels):
        label_mat = np.concatenate(labels)
        for k, task in enumerate(tasks):
            data[f"label_{task}"] = label_mat[:, k]
    pq.write_table(pa.table(data), out / "scores.parquet")
    summary = {
        "checkpoint": str(scorer.checkpoint),
        "split": str(split_dir),
        "requests": requests,
        "targets": targets,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "candidates_per_s": targets / seconds,
        "cache": scorer.cache.stats(),
    }
    c = summary["cache"]
    print(
        f"scored {requests} requests, {targets} candidates in {seconds:.2f} s: "
        f"{summary['requests_per_s']:.1f} requests/s, {summary['candidates_per_s']:.1f} "
        f"candidates/s (cache: {c['hits']} hits, {c['misses']} misses, {c['evictions']} "
        f"evictions) -> {out / 'scores.parquet'}",
        flush=True,
    )
    return summary
