"""Status logging for the ``longseq`` entry points: one rank-aware format, on stderr.

`setup_logging` configures the ``longseq`` logger (its children: ``longseq.train``,
``longseq.eval``, ``longseq.data``, ...) once per process; library modules only call
`get_logger`. Lines look like ``[longseq rank0 12:00:01] message``. Rank 0 logs ``INFO`` and
above; other ranks log warnings and errors only (every rank's problems show, the status lines
show once). Results a CLI prints for users or scripts (evaluation's table) stay on stdout.

This module imports nothing from longseq (every layer may use it).
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "longseq"


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (looked up per record, so captured or replaced
    streams, e.g. pytest's, receive the lines)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: ANN201 - logging's attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - set by StreamHandler.__init__
        pass


class _RankFormatter(logging.Formatter):
    def __init__(self, rank: int) -> None:
        super().__init__(f"[{ROOT} rank{rank} %(asctime)s] %(message)s", datefmt="%H:%M:%S")


def _env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def setup_logging(rank: int | None = None, level: int | None = None) -> logging.Logger:
    """Configure the ``longseq`` logger for this process and return it.

    Args:
        rank: this process's rank (default: ``$RANK``, 0 without torchrun).
        level: the logger's level (default: ``INFO`` on rank 0, ``WARNING`` elsewhere).

    Idempotent: a second call replaces the handler instead of adding one.
    """
    rank = _env_rank() if rank is None else rank
    logger = logging.getLogger(ROOT)
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(_RankFormatter(rank))
    logger.addHandler(handler)
    logger.setLevel(
        level if level is not None else (logging.INFO if rank == 0 else logging.WARNING)
    )
    logger.propagate = False
    return logger


def get_logger(name: str) -> logging.Logger:
    """The logger ``name``: a dotted path under ``longseq`` (e.g. ``longseq.train``), so that
    `setup_logging`'s handler and level apply to it."""
    return logging.getLogger(name)
