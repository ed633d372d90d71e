"""Shared pieces of the multi-process tests: a small model config, table sizes, rank batches.

Module-level and importable by bare name, so ranks spawned by `longseq.parallel.spawn` (which
inherit the parent's ``sys.path``) can use them too.
"""

from __future__ import annotations

from pathlib import Path

WORLD = 2
BATCH = 6


def model_cfg():
    """A tiny STCA model config (fast on 2 CPU ranks)."""
    from longseq.model.model import ModelConfig
    from longseq.model.stca import STCAConfig

    return ModelConfig(
        embedding_dim=8,
        pos_dim=4,
        stca=STCAConfig(d_model=16, num_heads=2, num_layers=2),
        head_hidden=[16],
    )


def sizes(data: Path):
    """TableSizes from the data set's meta.json, as the trainer reads them."""
    from longseq.train.loop import read_dataset_meta, table_sizes

    return table_sizes(read_dataset_meta(data))


def features(data: Path):
    """The side features ``meta.json`` declares (empty for most test data sets)."""
    from longseq.train.loop import read_dataset_meta

    return read_dataset_meta(data).features


def rank_batch(data: Path, rank: int):
    """The first unshuffled batch of ``rank``'s share of the train split (with the data set's
    declared side features)."""
    from longseq.data.collate import collate
    from longseq.data.reader import RequestReader

    reader = RequestReader(data / "train", BATCH, rank, WORLD, shuffle=False)
    return collate(next(iter(reader)), ["click"], features=features(data))
