"""One writer per run directory: an exclusive ``fcntl.flock`` on ``<run_dir>/.lock``.

Rank 0 of a training job takes the lock before it writes anything into the run dir and holds it
until the job ends (the kernel releases it when the process dies, however it dies). The file
records the holder's host, pid and start time, so a second job on the same run dir fails at once
with an error naming the holder. A lock file left with a holder that no longer holds the lock (a
killed job) is taken over with a message. ``flock`` is reliable on local file systems; on network
file systems it depends on the client (NFSv4 maps it to byte-range locks).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from longseq.log import get_logger

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

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def holder(self) -> dict[str, Any]:
        """What the lock file says about its holder (``{}`` when empty or unreadable)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def acquire(self) -> None:
        """Take the lock or raise `RunDirLocked` naming the holder; never blocks."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            raise RunDirLocked(
                f"run_dir {self.path.parent} is in use by another job: pid {h.get('pid', '?')} "
                f"on host {h.get('host', '?')}, started {h.get('started', '?')} (lock file "
                f"{self.path}). Wait for it, stop it, or choose another run_dir"
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

    def release(self) -> None:
        """Empty the lock file (a clean end leaves no holder behind) and unlock."""
        if self._fd is None:
            return
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
