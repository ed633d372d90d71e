"""Score a split with a checkpointed model at a served window (no trainer needed)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from omegaconf import OmegaConf
from tqdm import tqdm

from longseq.data.collate import collate
from longseq.data.reader import RequestReader
from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel, ModelConfig


@dataclass
class Predictions:
    """Per-target scores of one pass over a split."""

    request_id: np.ndarray
    user_id: np.ndarray
    target_index: np.ndarray
    labels: np.ndarray  #: [N, tasks]
    scores: np.ndarray  #: [N, tasks] probabilities
    served_len: np.ndarray  #: [N] history events served to each target's request


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run dir / checkpoints dir whose latest checkpoint is used."""
    from longseq.parallel.checkpoint import latest_checkpoint  # DCP layout only, no process group

    p = Path(path)
    if (p / "longseq.json").is_file():
        return p
    for run in (p, p.parent):
        found = latest_checkpoint(run)
        if found is not None:
            return found
    raise FileNotFoundError(f"checkpoint={path}: no complete longseq checkpoint there")


def load_model(ckpt: Path, meta: dict[str, Any]) -> LongSeqModel:
    """Rebuild the model from ``longseq.json`` and load its weights (any writer world size)."""
    mcfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), meta["model"]))
    model = LongSeqModel(mcfg, TableSizes(**meta["tables"]), meta["tasks"])
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=str(ckpt), no_dist=True)
    model.load_state_dict(state["model"])
    return model.eval()


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
) -> Predictions:
    """Score every target of this rank's share of ``split_dir`` with ``window`` events served."""
    reader = RequestReader(split_dir, batch_size, rank, world_size, shuffle=False)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in Predictions.__dataclass_fields__}
    total = -(-reader.num_rows() // batch_size)
    for table in tqdm(reader, total=total, disable=not progress, desc=desc, file=sys.stderr):
        wins = None if window is None else np.full(table.num_rows, window, dtype=np.int64)
        b = collate(table, model.tasks, wins)
        probs = torch.sigmoid(model(b)).numpy()
        nt = b.num_targets.numpy()
        cols["request_id"].append(np.repeat(b.request_ids.numpy(), nt))
        cols["user_id"].append(np.repeat(b.user_ids.numpy(), nt))
        cols["target_index"].append(np.concatenate([np.arange(n) for n in nt]))
        cols["labels"].append(b.labels.numpy())
        cols["scores"].append(probs)
        cols["served_len"].append(np.repeat(b.history_lengths().numpy(), nt))
    if not cols["labels"]:
        raise ValueError(f"no requests to evaluate in {split_dir}")
    return Predictions(**{k: np.concatenate(v) for k, v in cols.items()})
