"""Checkpoints with torch.distributed.checkpoint (DCP): sharded, atomic, reshardable.

Layout of ``<run_dir>/checkpoints/``:

* ``step_<n>/``: DCP files (sharded tables, dense weights, both optimizers) plus
  ``longseq.json`` (step, model/data description) and ``rank_<r>.json`` (reader position and
  RNG state of each rank). A folder with this name is always complete: ranks write into
  ``step_<n>.tmp/`` and rank 0 renames it after everybody has finished.
* ``latest``: a text file naming the newest complete checkpoint, replaced atomically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

_STEP = re.compile(r"^step_(\d+)$")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (``latest``, else the highest ``step_<n>``)."""
    root = checkpoint_root(run_dir)
    pointer = root / "latest"
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if (cand / "longseq.json").is_file():
            return cand
    steps = sorted(
        (int(m.group(1)), p)
        for p in root.glob("step_*")
        if (m := _STEP.match(p.name)) and (p / "longseq.json").is_file()
    )
    return steps[-1][1] if steps else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    state: dict[str, Any],
    meta: dict[str, Any],
    rank_state: dict[str, Any],
    keep_last: int = 3,
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint folder."""
    root = checkpoint_root(run_dir)
    final = root / f"step_{step}"
    tmp = root / f"step_{step}.tmp"
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if dist.is_initialized():
        dist.barrier()
    dcp.save(state, checkpoint_id=str(tmp))
    (tmp / f"rank_{rank}.json").write_text(json.dumps(rank_state))
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        (tmp / "longseq.json").write_text(json.dumps({**meta, "step": step}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_atomic(root / "latest", final.name + "\n")
        _prune(root, keep_last)
    if dist.is_initialized():
        dist.barrier()
    return final


def _prune(root: Path, keep_last: int) -> None:
    steps = sorted((int(m.group(1)), p) for p in root.glob("step_*") if (m := _STEP.match(p.name)))
    for _, p in steps[: max(0, len(steps) - keep_last)]:
        shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: str | Path, state: dict[str, Any]) -> dict[str, Any]:
    """Load DCP tensors into ``state`` in place (any world size); returns ``longseq.json``."""
    path = Path(path)
    meta_file = path / "longseq.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{path} is not a complete longseq checkpoint (no longseq.json)")
    try:
        dcp.load(state, checkpoint_id=str(path))
    except CheckpointException as e:  # a BaseException: name what cannot reshard, and why
        if "Size mismatch" in str(e) and "momentum" in str(e):
            raise ValueError(
                f"{path}: an optimizer state has another global size than in the checkpoint "
                f"({_first_line(e)}). Row-wise Adagrad keeps one momentum per row *per column "
                "shard*, so a column_wise table's sparse optimizer state loads only into the "
                "same number of column shards (the same world size); use row_wise or table_wise "
                "for that table to change the world size"
            ) from None
        raise
    return json.loads(meta_file.read_text())


def _first_line(e: BaseException) -> str:
    """The 'Size mismatch ...' line of a DCP failure (it is repeated once per rank)."""
    for line in str(e).splitlines():
        if "Size mismatch" in line:
            return line.strip().removeprefix("ValueError: ")
    return str(e).splitlines()[0]


def load_rank_state(path: str | Path, rank: int) -> dict[str, Any] | None:
    """This rank's reader/RNG state, or None when the checkpoint had fewer ranks."""
    f = Path(path) / f"rank_{rank}.json"
    return json.loads(f.read_text()) if f.is_file() else None
