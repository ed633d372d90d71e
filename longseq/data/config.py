"""Typed config of the training data section (``data:`` in ``configs/train.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from longseq.data.windows import WindowConfig


@dataclass
class DataConfig:
    """Where the data is and how it is batched.

    Attributes:
        path: data set folder holding ``train/``, ``test/`` and ``meta.json``.
        batch_size: requests per rank per step (pointwise: rows = targets per rank per step).
        pointwise: one target per row with the history repeated (the baseline layout).
        shuffle_buffer: rows in each rank's shuffle buffer.
        window: training-time history window (length extrapolation).
        split: split to train on.
    """

    path: str = MISSING
    batch_size: int = 32
    pointwise: bool = False
    shuffle_buffer: int = 2048
    window: WindowConfig = field(default_factory=WindowConfig)
    split: str = "train"
