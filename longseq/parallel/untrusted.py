"""Reading what a run dir holds as untrusted input: no symbolic links, short sanitised excerpts.

A run dir (checkpoints, pointers, the lock file) may come from elsewhere: a copied run, a shared
file system. Every file longseq reads or writes inside it must be the file itself, not a link to
somewhere else (`refuse_symlink`, `open_no_follow`), and an error about a file's content quotes
at most a short excerpt with control characters replaced (`excerpt`), so that a crafted file
cannot make longseq print another file's content or drive the terminal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


class SymlinkRefused(ValueError):
    """A file or folder of a run dir or checkpoint is a symbolic link."""


def excerpt(text: str, limit: int = 32) -> str:
    """At most ``limit`` characters of ``text``, non-printable ones as ``?``, quoted."""
    clean = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return repr(clean + ("..." if len(text) > limit else ""))


def refuse_symlink(path: str | Path, what: str = "") -> None:
    """Raise `SymlinkRefused` when ``path`` itself is a symbolic link (its target is not read
    and not named)."""
    if Path(path).is_symlink():
        raise SymlinkRefused(
            f"{path}: a symbolic link{f' ({what})' if what else ''}, refused: files and folders "
            "inside a run dir or checkpoint must be real ones (a link may lead outside it)"
        )


def open_no_follow(path: str | Path, mode: str = "rb") -> IO:
    """``open(path, mode)`` for reading that refuses a symbolic link (``O_NOFOLLOW``)."""
    if mode not in ("r", "rb"):
        raise ValueError(f"open_no_follow reads only, not {mode!r}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if Path(path).is_symlink():
            raise SymlinkRefused(
                f"{path}: a symbolic link, refused: files inside a run dir or checkpoint "
                "must be real ones (a link may lead outside it)"
            ) from None
        raise e
    return os.fdopen(fd, mode)


def read_text_no_follow(path: str | Path, limit: int = 64 << 20) -> str:
    """The text of ``path`` (a real file, not a link), refusing files over ``limit`` bytes."""
    with open_no_follow(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit} bytes (refused)")
    return data.decode("utf-8")


def replace_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (through ``<path>.tmp`` and ``os.replace``) without
    ever writing through a link: a ``.tmp`` file or link left there is removed first and the
    new one is created exclusively with ``O_NOFOLLOW``; the final rename replaces a link at
    ``path`` itself rather than following it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
