"""Score a split with a checkpointed model at a served window (no trainer needed).

The reader, collation and the model (TorchRec) are imported when `predict` runs, so code that
only handles `Predictions` (the metrics, spawned test ranks) stays light.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from longseq.model.model import LongSeqModel


@dataclass
class Predictions:
    """Per-target scores of one pass over a split."""

    request_id: np.ndarray
    user_id: np.ndarray
    target_index: np.ndarray
    labels: np.ndarray  #: [N, tasks]
    scores: np.ndarray  #: [N, tasks] probabilities
    served_len: np.ndarray  #: [N] history events served to each target's request
    batch_index: np.ndarray  #: [N] index of the batch that scored the target (reading order)


@torch.no_grad()
def predict(
    model: LongSeqModel,
    split_dir: Path,
    window: int | None,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    desc: str = "eval",
    lockstep: bool = False,
    device: torch.device | None = None,
) -> Predictions:
    """Score the targets of ``split_dir`` with ``window`` events served.

    With ``world_size > 1`` this rank scores batches ``rank, rank + world_size, ...`` of the same
    unshuffled batch sequence a single process would score, so every request is scored in exactly
    the same batch (same padding, same float reductions) as in a one-process run: each rank's
    predictions are bit-identical to the single-process ones of its batches, and the metrics over
    all ranks (`longseq.eval.dist_metrics`) equal the one-process metrics. Rows carry the
    ``batch_index`` of their batch. The price: every rank reads the whole split's Arrow data
    (only its own batches are collated and scored), which is small next to scoring.

    ``lockstep``: the model's lookups are collectives (sharded tables), so every rank runs the
    same number of forwards; a rank left without a batch in the last round re-scores one of the
    split's batches and discards the result. ``device``: where batches go (the tables' device).
    """
    from tqdm import tqdm

    from longseq.data.collate import collate
    from longseq.data.reader import RequestReader

    reader = RequestReader(split_dir, batch_size, 0, 1, shuffle=False)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in Predictions.__dataclass_fields__}
    total = -(-reader.num_rows() // batch_size)
    bar = tqdm(total=total, disable=not progress, desc=desc, file=sys.stderr)
    forwards, spare = 0, None
    for i, table in enumerate(reader):
        bar.update(1)
        spare = table if spare is None else spare
        if i % world_size != rank:
            continue
        wins = None if window is None else np.full(table.num_rows, window, dtype=np.int64)
        b = collate(table, model.tasks, wins, features=model.features)
        probs = torch.sigmoid(model(b if device is None else b.to(device))).float().cpu().numpy()
        forwards += 1
        nt = b.num_targets.numpy()
        cols["request_id"].append(np.repeat(b.request_ids.numpy(), nt))
        cols["user_id"].append(np.repeat(b.user_ids.numpy(), nt))
        cols["target_index"].append(np.concatenate([np.arange(n) for n in nt]))
        cols["labels"].append(b.labels.numpy())
        cols["scores"].append(probs)
        cols["served_len"].append(np.repeat(b.history_lengths().numpy(), nt))
        cols["batch_index"].append(np.full(int(nt.sum()), i, dtype=np.int64))
    bar.close()
    if lockstep and spare is not None:
        for _ in range(-(-total // world_size) - forwards):  # keep the collectives paired
            b = collate(spare, model.tasks, features=model.features)
            model(b if device is None else b.to(device))
    if not cols["labels"] and world_size == 1:
        raise ValueError(f"no requests to evaluate in {split_dir}")
    return Predictions(**{k: _cat(v, k, len(model.tasks)) for k, v in cols.items()})


def _cat(parts: list[np.ndarray], name: str, tasks: int) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    if name in ("labels", "scores"):
        return np.zeros((0, tasks), dtype=np.float32)
    return np.zeros(0, dtype=np.int64)
