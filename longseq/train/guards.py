"""Checks a training job makes before it trains: the run-dir lock, the run dir's earlier
checkpoints (not overwritten without ``resume=auto`` or ``overwrite=true``), the resume
checkpoint's compatibility with this run's model, and the evaluation split."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import torch.distributed as dist

from longseq.log import get_logger
from longseq.parallel.checkpoint import remove_stale_tmp, run_nonce
from longseq.parallel.pointers import STEP, checkpoint_root, resolve_checkpoint
from longseq.parallel.run_lock import RunDirLock
from longseq.parallel.untrusted import refuse_symlink

log = get_logger("longseq.train")


def _flatten(d: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(d, dict):
        for k in sorted(d):
            yield from _flatten(d[k], f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, d


def _short(value: Any) -> str:
    """``repr(value)``, at most 60 characters (a checkpoint's values are untrusted input)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def config_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved -> current`` for every dotted key whose value differs (or exists once);
    values are quoted at most 60 characters long."""
    a, b = dict(_flatten(saved, "")), dict(_flatten(current, ""))
    return [
        f"{_short(k)[1:-1]}: {_short(a.get(k, '<absent>'))} in the checkpoint, "
        f"{_short(b.get(k, '<absent>'))} now"
        for k in sorted(set(a) | set(b))
        if a.get(k, "<absent>") != b.get(k, "<absent>")
    ]


def _with_defaults(saved_model: dict[str, Any], schema: type | None) -> dict[str, Any]:
    """The checkpoint's model config completed with ``schema``'s defaults (keys added to the
    schema after the checkpoint was written are then not differences)."""
    if schema is None:
        return saved_model
    from omegaconf import OmegaConf

    try:
        from longseq.model.model_config import complete_saved_config

        merged = OmegaConf.merge(OmegaConf.structured(schema), complete_saved_config(saved_model))
    except Exception:  # noqa: BLE001 - a key the schema no longer has: compare as written
        return saved_model
    return cast(dict[str, Any], OmegaConf.to_container(merged))


def check_resume_compatible(
    ckpt: Path, saved: dict[str, Any], now: dict[str, Any], schema: type | None = None
) -> None:
    """Raise ``ValueError`` listing the config keys (``model.*``, table sizes, tasks) in which
    this run differs from the checkpoint's ``longseq.json``: such a resume cannot load.
    ``schema``: the model config dataclass (its defaults complete an older checkpoint's)."""
    diffs = config_diff(
        {
            "model": _with_defaults(saved.get("model", {}), schema),
            "tables": saved.get("tables", {}),
        },
        {"model": now["model"], "tables": now["tables"]},
    )
    if list(saved.get("features") or []) != list(now.get("features") or []):
        diffs.append(
            f"features: {_short(saved.get('features'))} in the checkpoint, "
            f"{_short(now.get('features'))} now (meta.json's features, model.use_features)"
        )
    if list(saved.get("tasks", now["tasks"])) != list(now["tasks"]):
        diffs.append(f"tasks: {_short(saved.get('tasks'))} in the checkpoint, {now['tasks']!r} now")
    if diffs:
        raise ValueError(
            f"cannot resume from {ckpt}: this run's model differs from the checkpoint's "
            f"({ckpt / 'longseq.json'}) in " + "; ".join(diffs) + ". Use the checkpoint's "
            "values (tables and tasks come from the data set's meta.json) or start a new run_dir"
        )


def lock_run_dir(run_dir: Path, is_main: bool) -> tuple[RunDirLock | None, str]:
    """Rank 0 takes the run-dir lock (every rank raises if it cannot) and removes temporary
    checkpoint folders of dead runs. Returns (the lock on rank 0, this run's nonce).
    Collective when a process group exists."""
    lock, error = None, None
    if is_main:
        lock = RunDirLock(run_dir)
        try:
            lock.acquire()
        except Exception as e:  # noqa: BLE001 - every rank must learn of it
            lock, error = None, e
    if dist.is_initialized():
        box = [None if error is None else f"{type(error).__name__}: {error}"]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            raise RuntimeError(f"rank 0 could not lock the run dir: {box[0]}")
    if error is not None:
        raise error
    nonce = run_nonce()
    if is_main:
        for p in remove_stale_tmp(run_dir, nonce):
            log.info(f"removed {p}: an incomplete checkpoint of an earlier run")
    return lock, nonce


#: Entries of a run dir the training writes (each must be the real file or folder, not a link).
WRITTEN = ("config.yaml", "metrics.jsonl", "checkpoints", "eval", "tensorboard", "profile")
#: Entries of ``checkpoints/`` besides the step folders that belong to one run.
_RUN_POINTERS = ("latest", "best", "best.json")


def _earlier_checkpoints(root: Path) -> list[str]:
    """Names of the step folders and pointers in ``root`` (sorted by step)."""
    if not root.is_dir():
        return []
    steps = sorted((p for p in root.iterdir() if STEP.match(p.name)), key=lambda p: int(p.name[5:]))
    return [p.name for p in steps] + [n for n in _RUN_POINTERS if (root / n).exists()]


def _inside(ckpt: Path, root: Path) -> bool:
    return ckpt.resolve().parent == root.resolve()


def prepare_run_dir(cfg: Any, is_main: bool) -> None:
    """Refuse to train into a run dir that already holds checkpoints, unless the run continues
    them (``resume=auto`` or ``resume=`` one of its own checkpoints) or ``overwrite=true`` asks
    to start over: then rank 0 (``is_main``) deletes the earlier step folders, ``latest``,
    ``best`` and ``best.json`` (``metrics.jsonl`` rows are dropped by the metrics logger).
    Also refuses symbolic links among the entries the training writes (`WRITTEN`). Call it
    on every rank after taking the run-dir lock, before anything is written."""
    run_dir = Path(cfg.run_dir)
    for name in WRITTEN:
        refuse_symlink(run_dir / name, "a run dir entry the training writes")
    root = checkpoint_root(run_dir)
    for name in (*_RUN_POINTERS, "best.json.tmp"):
        refuse_symlink(root / name, "a run dir entry the training writes")
    for log_file in run_dir.glob("bad_rows.rank*.jsonl"):
        refuse_symlink(log_file, "a run dir entry the training writes")
    earlier = _earlier_checkpoints(root)
    if not earlier or cfg.resume == "auto":
        return
    if cfg.resume not in ("none", "", None) and _inside(resolve_checkpoint(cfg.resume), root):
        return  # continues (branches from) one of its own checkpoints
    if not cfg.overwrite:
        shown = ", ".join(earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise FileExistsError(
            f"run_dir={run_dir} already holds checkpoints of an earlier run ({shown} in "
            f"{root}): pass resume=auto to continue it, overwrite=true to delete them and start "
            "over, or choose another run_dir"
        )
    if is_main:
        for name in earlier:
            p = root / name
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        log.warning(f"overwrite=true: deleted the earlier run's {', '.join(earlier)} in {root}")


def check_best_metric(tc: Any, tasks: list[str]) -> None:
    """With ``trainer.eval_windows`` given, ``trainer.best_metric`` must be one of the keys the
    evaluation will log (otherwise it is checked at the first evaluation)."""
    if not tc.best_metric or not tc.eval_windows:
        return
    keys = [
        f"eval/{m}/{t}@{w}" for m in ("auc", "gauc", "nll") for t in tasks for w in tc.eval_windows
    ]
    if tc.best_metric not in keys:
        raise ValueError(
            f"trainer.best_metric={tc.best_metric!r} will not be logged; one of: {', '.join(keys)}"
        )
