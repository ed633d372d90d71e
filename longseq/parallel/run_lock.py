"""One writer per run directory: an exclusive ``fcntl.flock`` on ``<run_dir>/.lock``.

Rank 0 of a training job takes the lock before it writes anything into the run dir and holds it
until the job ends (the kernel releases it when the process dies, however it dies). The file
records the holder's host, pid and start time, so a second job on the same run dir fails at once
with an error naming the holder. A lock file left with a holder that no longer holds the lock (a
killed job) is taken over with a message. ``flock`` is reliable on local file systems; on network
file systems it depends on the client (NFSv4 maps it to byte-range locks). The lock file is
opened without following a symbolic link (a planted link would make the holder write its
record into another file).

Other jobs that write inside a run dir (the evaluation's ``out=``, serving's ``out=``) take the
same lock for as long as they write (`writing_inside`), unless this process already holds it (the
evaluation callback of the training that owns the run dir).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from longseq.log import get_logger
from longseq.parallel.untrusted import SymlinkRefused, open_no_follow

log = get_logger("longseq.parallel")


class RunDirLocked(RuntimeError):
    """Another live process holds the run directory's lock."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDirLock:
    """The lock of ``run_dir`` (``acquire`` / ``release``, or a context manager)."""

    #: locks this process holds, by resolved run dir
    _held: ClassVar[dict[Path, RunDirLock]] = {}

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    @classmethod
    def held_here(cls, run_dir: str | Path) -> bool:
        """Whether this process holds the lock of ``run_dir``."""
        return Path(run_dir).resolve() in cls._held

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its holder (``{}`` when empty or unreadable)."""
        try:
            with open_no_follow(self.path, "r") as f:
                info = json.loads(f.read(4096) or "{}")
        except (OSError, ValueError):  # a link (SymlinkRefused is a ValueError), junk
            return {}
        return info if isinstance(info, dict) else {}

    def acquire(self) -> None:
        """Take the lock or raise `RunDirLocked` naming the holder; never blocks."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise SymlinkRefused(
                    f"{self.path}: a symbolic link, refused: the lock file of a run dir must be "
                    "a real file (remove the link)"
                ) from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            raise RunDirLocked(
                f"run_dir {self.path.parent} is in use by another job: pid "
                f"{_field(h, 'pid')} on host {_field(h, 'host')}, started {_field(h, 'started')} "
                f"(lock file {self.path}). Wait for it, stop it, or choose another run_dir"
            ) from None
        old = self.holder()
        if old.get("pid"):
            state = "not running"
            if old.get("host") == socket.gethostname() and _alive(int(old["pid"])):
                state = "alive but no longer holding the lock"
            elif old.get("host") != socket.gethostname():
                state = "no longer holding the lock"
            log.warning(
                f"taking over the stale lock {self.path} of pid {old['pid']} on host "
                f"{old.get('host', '?')} (started {old.get('started', '?')}; {state})"
            )
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        self._held[self.path.parent.resolve()] = self

    def release(self) -> None:
        """Empty the lock file (a clean end leaves no holder behind) and unlock."""
        if self._fd is None:
            return
        self._held.pop(self.path.parent.resolve(), None)
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _field(holder: dict[str, Any], key: str) -> str:
    """A lock record's field for a message: short, printable (the file is not trusted)."""
    text = str(holder.get(key, "?"))[:64]
    return "".join(c if c.isprintable() else "?" for c in text)


def enclosing_run_dir(path: str | Path) -> Path | None:
    """The run dir ``path`` lies in (or is): the nearest of it and its parents holding a
    ``.lock`` file; None outside any run dir."""
    p = Path(path).resolve()
    for folder in (p, *p.parents):
        lock = folder / ".lock"
        if lock.is_file() or lock.is_symlink():
            return folder
    return None


@contextmanager
def writing_inside(path: str | Path, key: str, is_main: bool = True) -> Iterator[None]:
    """Hold the run-dir lock while writing to ``path`` when it lies inside a run dir that this
    process does not hold already; raise `RunDirLocked` naming ``key`` and the holder when
    another job holds it. Collective under an initialised process group: rank 0 (``is_main``)
    locks and every rank learns the outcome."""
    import torch.distributed as dist

    run = enclosing_run_dir(path)
    lock, error = None, None
    if is_main and run is not None and not RunDirLock.held_here(run):
        lock = RunDirLock(run)
        try:
            lock.acquire()
        except (RunDirLocked, SymlinkRefused) as e:
            lock, error = None, e
    if dist.is_available() and dist.is_initialized():
        box = [None if error is None else str(error)]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None and error is None:
            error = RunDirLocked(box[0])
    if error is not None:
        raise RunDirLocked(
            f"{key}={path} lies inside run_dir {run}, which cannot be locked for writing: "
            f"{error} (or write to another {key})"
        ) from None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
