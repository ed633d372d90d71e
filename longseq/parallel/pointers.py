"""``checkpoints/latest`` and ``checkpoints/best``: text files naming one ``step_<n>`` folder.

A pointer is data from disk: it must be a real file (not a symbolic link: a link could make
longseq read, and quote, any file) naming a ``step_<n>`` folder directly inside the checkpoints
folder, and that folder must be a real folder too. Anything else is refused with an error naming
the pointer and quoting at most a short, sanitised excerpt of what it holds.
"""

from __future__ import annotations

import re
from pathlib import Path

from longseq.parallel.untrusted import excerpt, open_no_follow, refuse_symlink, replace_text

#: Name of a complete checkpoint folder.
STEP = re.compile(r"^step_(\d+)$")
#: Pointer files a user may pass as ``checkpoint=`` / ``resume=``.
POINTERS = ("latest", "best")
#: Bytes of a pointer file read (``step_<n>`` and a newline fit many times).
_POINTER_BYTES = 64


def checkpoint_root(run_dir: str | Path) -> Path:
    """``<run_dir>/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def read_pointer(root: Path, name: str, missing_ok: bool = False) -> Path | None:
    """The folder the pointer ``root/name`` names, or None when the pointer is absent or its
    folder is gone (pruned). Raises ``ValueError`` for a pointer (or its folder) that is a
    symbolic link or names anything but a ``step_<n>`` folder of ``root``."""
    pointer = root / name
    refuse_symlink(pointer, f"the {name} pointer")
    if not pointer.is_file():
        return None
    with open_no_follow(pointer) as f:
        raw = f.read(_POINTER_BYTES)
    text = raw.decode("utf-8", errors="replace").strip()
    if not STEP.match(text):
        raise ValueError(
            f"{pointer}: names {excerpt(text)}, not a step_<n> folder of {root} (refused)"
        )
    target = root / text
    refuse_symlink(target, f"the checkpoint folder {name} names")
    if not (target / "longseq.json").is_file():
        return None
    return target


def write_pointer(root: Path, name: str, folder: Path) -> None:
    """Point ``root/name`` at ``folder`` (a ``step_<n>`` folder of ``root``), atomically."""
    if not STEP.match(folder.name):
        raise ValueError(f"{folder}: not a step_<n> checkpoint folder")
    replace_text(root / name, folder.name + "\n")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (``latest``, else the highest ``step_<n>``)."""
    root = checkpoint_root(run_dir)
    found = read_pointer(root, "latest")
    if found is not None:
        return found
    steps = sorted(
        (int(m.group(1)), p)
        for p in root.glob("step_*")
        if (m := STEP.match(p.name)) and (p / "longseq.json").is_file()
    )
    if steps:
        refuse_symlink(steps[-1][1], "the newest checkpoint folder")
    return steps[-1][1] if steps else None


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint ``checkpoints/best`` names, or None."""
    return read_pointer(checkpoint_root(run_dir), "best")


def resolve_checkpoint(path: str | Path) -> Path:
    """What ``checkpoint=`` / ``resume=`` may name: a ``step_<n>`` checkpoint folder, a pointer
    file (``<run>/checkpoints/latest`` or ``best``: followed), a checkpoints folder or a run dir
    (its latest checkpoint)."""
    p = Path(path)
    if p.name in POINTERS and (p.is_file() or p.is_symlink()):
        found = read_pointer(p.parent, p.name)
        if found is None:
            raise FileNotFoundError(f"{p}: names no complete checkpoint of {p.parent}")
        return found
    if (p / "longseq.json").is_file():
        refuse_symlink(p, "a checkpoint folder")
        return p
    for run in (p, p.parent):
        found = latest_checkpoint(run)
        if found is not None:
            return found
    raise FileNotFoundError(f"{path}: no complete longseq checkpoint there")
