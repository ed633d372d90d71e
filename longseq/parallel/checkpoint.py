"""Checkpoints with torch.distributed.checkpoint (DCP): sharded, atomic, reshardable.

Layout of ``<run_dir>/checkpoints/``:

* ``step_<n>/``: DCP files (sharded tables, dense weights, both optimizers) plus
  ``longseq.json`` (step, model/data description, and a manifest of every file's size) and
  ``rank_<r>.json`` (reader position and RNG state of each rank). A folder with this name is
  always complete: ranks write into ``step_<n>.tmp-<nonce>/`` (the nonce is the run's own) and
  rank 0 renames it after everybody has finished.
* ``latest`` (and ``best``, see `longseq.train.best`): text files naming one ``step_<n>``
  folder, replaced atomically; a pointer that leaves this folder is refused.

Every load goes through `longseq.parallel.safe_load` (no code runs from a checkpoint) after
`verify_checkpoint` has checked ``longseq.json`` (plain JSON, keys checked:
`longseq.parallel.ckpt_meta`), that no entry of the folder is a symbolic link, and the manifest
(a truncated or missing file is named).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException

from longseq.parallel.ckpt_meta import read_checkpoint_meta
from longseq.parallel.pointers import (
    STEP,
    checkpoint_root,
    latest_checkpoint,
    read_pointer,
    write_pointer,
)
from longseq.parallel.safe_load import read_metadata_file, safe_dcp_load
from longseq.parallel.untrusted import read_text_no_follow, refuse_symlink

__all__ = [
    "checkpoint_root",
    "latest_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "run_nonce",
    "save_checkpoint",
    "verify_checkpoint",
]

#: Files of a checkpoint folder that its manifest does not cover (written after it).
_UNLISTED = ("longseq.json",)


def run_nonce() -> str:
    """A random token shared by all ranks (collective when a process group exists): the
    suffix of this run's temporary checkpoint folders."""
    token = [secrets.token_hex(4)]
    if dist.is_initialized():
        dist.broadcast_object_list(token, src=0)
    return token[0]


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    state: dict[str, Any],
    meta: dict[str, Any],
    rank_state: dict[str, Any],
    keep_last: int = 3,
    nonce: str | None = None,
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint folder.

    Ranks write into ``step_<n>.tmp-<nonce>``; rank 0 adds ``longseq.json`` (with a manifest of
    every file's size), renames the folder, points ``latest`` at it and keeps the newest
    ``keep_last`` (>= 1) checkpoints besides the one ``best`` names.
    """
    if keep_last < 1:
        raise ValueError(f"trainer.keep_last must be >= 1, got {keep_last}")
    nonce = nonce or run_nonce()
    root = checkpoint_root(run_dir)
    final = root / f"step_{step}"
    tmp = root / f"step_{step}.tmp-{nonce}"
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
        manifest = {
            p.name: p.stat().st_size
            for p in sorted(tmp.iterdir())
            if p.is_file() and p.name not in _UNLISTED
        }
        info = {**meta, "step": step, "manifest": manifest}
        (tmp / "longseq.json").write_text(json.dumps(info, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        write_pointer(root, "latest", final)
        _prune(root, keep_last, keep={final.name})
    if dist.is_initialized():
        dist.barrier()
    return final


def _prune(root: Path, keep_last: int, keep: set[str]) -> None:
    """Delete all but the newest ``keep_last`` step folders; never those in ``keep`` nor the
    one ``best`` names."""
    best = read_pointer(root, "best", missing_ok=True)
    keep = keep | ({best.name} if best is not None else set())
    steps = sorted((int(m.group(1)), p) for p in root.glob("step_*") if (m := STEP.match(p.name)))
    for _, p in steps[: max(0, len(steps) - keep_last)]:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)


def remove_stale_tmp(run_dir: str | Path, nonce: str) -> list[Path]:
    """Delete temporary checkpoint folders not of this run (``step_<n>.tmp*`` left by a crash;
    call it only while holding the run-dir lock). Returns what was removed."""
    removed = []
    for p in checkpoint_root(run_dir).glob("step_*.tmp*"):
        if p.is_dir() and not p.name.endswith(f".tmp-{nonce}"):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check ``longseq.json`` (`read_checkpoint_meta`), that no entry of the folder is a
    symbolic link, and every file of the manifest (present, same size); returns the
    ``longseq.json``. Checkpoints written before manifests existed have no sizes to check."""
    path = Path(path)
    refuse_symlink(path, "a checkpoint folder")
    meta = read_checkpoint_meta(path)
    for entry in sorted(path.iterdir()):
        refuse_symlink(entry, "a checkpoint file")
    for name, size in (meta.get("manifest") or {}).items():
        f = path / name
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing from the checkpoint (listed in longseq.json)")
        if f.stat().st_size != size:
            raise ValueError(
                f"{f}: {f.stat().st_size} bytes, {size} when written (truncated or corrupt)"
            )
    return meta


def load_checkpoint(
    path: str | Path, state: dict[str, Any], no_dist: bool = False
) -> dict[str, Any]:
    """Load DCP tensors into ``state`` in place (any world size); returns ``longseq.json``.

    The manifest is checked first and the metadata read without running code from it."""
    path = Path(path)
    meta = verify_checkpoint(path)
    read_metadata_file(path / ".metadata")  # on every rank: a clear error, not a DCP wrapper
    try:
        safe_dcp_load(state, path, no_dist=no_dist)
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
    return meta


def _first_line(e: BaseException) -> str:
    """The 'Size mismatch ...' line of a DCP failure (it is repeated once per rank)."""
    for line in str(e).splitlines():
        if "Size mismatch" in line:
            return line.strip().removeprefix("ValueError: ")
    return str(e).splitlines()[0]


def load_rank_state(path: str | Path, rank: int) -> dict[str, Any] | None:
    """This rank's reader/RNG state, or None when the checkpoint had fewer ranks."""
    f = Path(path) / f"rank_{rank}.json"
    refuse_symlink(f, "a rank's reader state")
    if not f.is_file():
        return None
    try:
        state = json.loads(read_text_no_follow(f, 16 << 20))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f}: truncated or corrupt ({type(e).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{f}: not a JSON object")
    return state


#: The wrapped model's attribute name: `TrainTask` (and the eval holder) keep it as ``.model``.
_PREFIX = "model."


def model_state_dict(wrapped: nn.Module) -> dict[str, torch.Tensor]:
    """The wrapped model's state dict with its own key names (what checkpoints store,
    so ``longseq.eval`` loads them into a bare model)."""
    return {k[len(_PREFIX) :]: v for k, v in wrapped.state_dict().items() if k.startswith(_PREFIX)}


def load_model_state_dict(wrapped: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of `model_state_dict`."""
    wrapped.load_state_dict({_PREFIX + k: v for k, v in state.items()})
