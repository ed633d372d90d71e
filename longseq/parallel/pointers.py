"""``checkpoints/latest`` and ``checkpoints/best``: text files naming one ``step_<n>`` folder.

A pointer is data from disk: it must name a ``step_<n>`` folder directly inside the checkpoints
folder (after resolving symlinks); anything else is refused with an error naming the pointer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Name of a complete checkpoint folder.
STEP = re.compile(r"^step_(\d+)$")
#: Pointer files a user may pass as ``checkpoint=`` / ``resume=``.
POINTERS = ("latest", "best")


def checkpoint_root(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def read_pointer(root: Path, name: str, missing_ok: bool = False) -> Path | None:
    """The folder the pointer ``root/name`` names, or None when the pointer is absent or its
    folder is gone (pruned). Raises ``ValueError`` for a pointer that leaves ``root``."""
    pointer = root / name
    if not pointer.is_file():
        return None
    text = pointer.read_text().strip()
    if not STEP.match(text):
        raise ValueError(
            f"{pointer}: names {text[:80]!r}, not a step_<n> folder of {root} (refused)"
        )
    target = root / text
    if target.exists() and target.resolve().parent != root.resolve():
        raise ValueError(
            f"{pointer}: {target} resolves to {target.resolve()}, outside {root} (refused)"
        )
    if not (target / "longseq.json").is_file():
        return None
    return target


def write_pointer(root: Path, name: str, folder: Path) -> None:
    """Point ``root/name`` at ``folder`` (a ``step_<n>`` folder of ``root``), atomically."""
    if not STEP.match(folder.name):
        raise ValueError(f"{folder}: not a step_<n> checkpoint folder")
    tmp = root / f"{name}.tmp"
    tmp.write_text(folder.name + "\n")
    os.replace(tmp, root / name)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (``latest``, else the highest ``step_<n>``)."""
    root = checkpoint_root(run_dir)
    found = read_pointer(root, "latest")
    if found is not None:
        return found
    steps = sorted(
        (int(m.group(1)), p)
        for p in root.glob("step_*")
        if (m := STEP.match(p.name))
        and (p / "longseq.json").is_file()
        and p.resolve().parent == root.resolve()
    )
    return steps[-1][1] if steps else None


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``checkpoints/best`` names, or None."""
    return read_pointer(checkpoint_root(run_dir), "best")


def resolve_checkpoint(path: str | Path) -> Path:
    """What ``checkpoint=`` / ``resume=`` may name: a ``step_<n>`` checkpoint folder, a pointer
    file (``<run>/checkpoints/latest`` or ``best``: followed), a checkpoints folder or a run dir
    (its latest checkpoint)."""
    p = Path(path)
    if p.is_file() and p.name in POINTERS:
        found = read_pointer(p.parent, p.name)
        if found is None:
            raise FileNotFoundError(f"{p}: names no complete checkpoint of {p.parent}")
        return found
    if (p / "longseq.json").is_file():
        return p
    for run in (p, p.parent):
        found = latest_checkpoint(run)
        if found is not None:
            return found
    raise FileNotFoundError(f"{path}: no complete longseq checkpoint there")
