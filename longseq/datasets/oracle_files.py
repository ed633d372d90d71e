"""Recompute a generated data set's ``oracle.json`` from its files (`oracle_from_dataset`): the
sequence-only oracle of `longseq.datasets.oracle`, or the feature block's
(`longseq.datasets.oracle_features`) when the generator wrote side features."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from longseq.data.meta import DatasetMeta
from longseq.datasets import oracle_features
from longseq.datasets.oracle import (
    OracleParams,
    oracle_report,
    oracle_scores,
    oracle_windows,
    topics_per_category,
)


def oracle_from_dataset(
    path: str | Path, split: str = "test", prior: str = "target"
) -> dict[str, Any]:
    """Recompute the ``oracle.json`` document from a generated data set's files.

    Reads ``meta.json`` (parameters), ``item_bias.npy`` and the split's Parquet files (their
    category, item, label and ``p_true`` columns, the whole split at once). With hidden topics
    (``topics_per_category`` > 1) the topic of an event or target is its item id //
    ``items_per_category``.
    """
    import pyarrow.parquet as pq

    root = Path(path)
    meta = DatasetMeta.read(root)
    cfg = meta.require_extra("config")
    if cfg.get("features"):  # the generator's feature block: its effects enter every score
        return oracle_features.oracle_from_dataset(root, split, prior)
    params = OracleParams.from_mapping(cfg)
    item_bias = np.load(root / "item_bias.npy")
    cols = ["user_id", "hist_category_id", "tgt_category_id", "tgt_item_id", "tgt_click"]
    cols += ["hist_item_id"] if topics_per_category(cfg) > 1 else []
    table = pq.read_table(root / split, columns=[*cols, "tgt_p_true"])

    def flat(name: str) -> tuple[np.ndarray, np.ndarray]:
        arr = table.column(name).combine_chunks()
        off = arr.offsets.to_numpy().astype(np.int64)
        return off - off[0], arr.values.to_numpy(zero_copy_only=False)[off[0] : off[-1]]

    h_off, h_cat = flat("hist_category_id")
    t_off, t_cat = flat("tgt_category_id")
    _, t_item = flat("tgt_item_id")
    if topics_per_category(cfg) > 1:  # the hidden topics the story (and the oracle) runs on
        h_cat, t_cat = (
            flat("hist_item_id")[1] // cfg["items_per_category"],
            t_item // cfg["items_per_category"],
        )
    windows = oracle_windows(meta.hist_len_max, cfg["oracle_windows"])
    scores = oracle_scores(h_cat, h_off, t_cat, t_off, item_bias[t_item], params, windows, prior)
    groups = np.repeat(table.column("user_id").to_numpy(), np.diff(t_off))
    return oracle_report(
        flat("tgt_click")[1],
        flat("tgt_p_true")[1],
        groups,
        scores,
        num_requests=table.num_rows,
        hist_len_max=meta.hist_len_max,
        params=asdict(params),
        split=split,
    )
