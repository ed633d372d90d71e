"""What the reader does with a request that fails validation: ``on_bad_row: error | skip``.

`RowChecker` runs the checks of ``python -m longseq.datasets.validate`` on every piece the reader loads
(schema once per file at start-up, then per row: nulls, parallel list lengths, history order,
``hist_ts < request_ts``, labels in {0, 1}, non-empty targets, ids >= 0 and below the
``meta.json`` vocabulary sizes). With ``error`` the first problem raises ``ValueError`` naming file,
row group, row (inside the row group), ``request_id`` and column. With ``skip`` the bad requests are
dropped, counted by the reader (its ``bad_rows`` position counter) and each one is reported by
`BadRowLog`: a JSON line appended to ``bad_rows_log`` (if set) and, never silently, a line on
stderr (all of them without a log file; the first `STDERR_LINES` per reader with one).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longseq.data.checks import id_limits, row_problems, schema_problem
from longseq.data.config import POLICIES
from longseq.data.meta import DatasetMeta
from longseq.log import get_logger

log = get_logger("longseq.data")

#: With a log file, stderr gets this many bad-row lines per reader, then one pointer to the file.
STDERR_LINES = 10


@dataclass
class BadRow:
    """One dropped request (``row`` is the row inside ``row_group``; None: a whole piece)."""

    file: str
    row_group: int
    row: int | None
    request_id: int | None
    column: str
    reason: str
    epoch: int = 0
    rank: int = 0
    worker: int = 0
    rows: int = 1  #: requests dropped by this record (a whole unreadable piece: its row count)

    def message(self) -> str:
        where = f"{self.file} (row group {self.row_group}): column {self.column!r}"
        if self.row is not None:
            where += f", row {self.row} (request_id={self.request_id})"
        return f"{where}: {self.reason}"


class BadRowLog:
    """Reports dropped requests: JSON lines in ``path`` (appended; safe across processes for
    lines under 4 KiB) and lines on stderr."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.printed = 0

    def report(self, records: list[BadRow]) -> None:
        if not records:
            return
        if self.path:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write("".join(json.dumps(asdict(r)) + "\n" for r in records))
        for r in records:
            if not self.path or self.printed < STDERR_LINES:
                log.warning(f"skipped bad request: {r.message()}")
            elif self.printed == STDERR_LINES:
                log.warning(f"further skipped requests: see {self.path}")
            self.printed += 1


class RowChecker:
    """Validates what the reader loads and applies the ``on_bad_row`` policy.

    Args:
        split_dir: the split folder (``meta.json`` is looked up from it for id ranges and tasks).
        policy: ``error`` or ``skip``.
    """

    def __init__(self, split_dir: str | Path, policy: str = "error") -> None:
        if policy not in POLICIES:
            raise ValueError(f"data.on_bad_row must be one of {'|'.join(POLICIES)}, got {policy!r}")
        self.policy = policy
        meta = DatasetMeta.near(split_dir)
        self.limits = id_limits(meta)
        self.tasks = list(meta.tasks) if meta is not None else []
        self.features = meta.features if meta is not None else ()

    def check_schemas(self, files: list[str]) -> None:
        """Raise ``ValueError`` naming the first file with a missing column or a wrong type
        (a file-level problem: no request of it could be used, whatever the policy)."""
        for f in files:
            bad = schema_problem(pq.ParquetFile(f).schema_arrow, f, self.tasks, self.features)
            if bad:
                raise ValueError(bad)

    def filter(
        self, table: pa.Table, path: str, row_group: int, start: int
    ) -> tuple[pa.Table, list[BadRow]]:
        """``table`` (rows ``start...`` of the row group) without its bad requests, and those.

        With ``error`` a bad request raises instead (file, row group, row, request_id, column).
        """
        problems = row_problems(table, self.limits, self.features)
        if not problems:
            return table, []
        ids = table.column("request_id")
        by_row: dict[int, list[tuple[str, str]]] = {}
        for row, column, what in problems:
            by_row.setdefault(row, []).append((column, what))
        records = []
        for row, found in by_row.items():
            rid = ids[row].as_py()
            columns = ", ".join(dict.fromkeys(c for c, _ in found))
            reason = "; ".join(f"{c}: {w}" for c, w in found) if len(found) > 1 else found[0][1]
            records.append(BadRow(path, row_group, start + row, rid, columns, reason))
        if self.policy == "error":
            r = records[0]
            raise ValueError(
                f"{r.message()} (data.on_bad_row=error; data.on_bad_row=skip drops such "
                "requests and reports them)"
            )
        keep = np.ones(table.num_rows, dtype=bool)
        keep[list(by_row)] = False
        return table.filter(pa.array(keep)), records

    def unreadable(self, path: str, row_group: int, rows: int, error: Exception) -> BadRow:
        """A row group that cannot be read: raises with ``error``, else one record for all."""
        what = f"cannot read row group: {error}"
        if self.policy == "error":
            raise ValueError(f"{path} (row group {row_group}): {what}") from error
        return BadRow(path, row_group, None, None, "*", what, rows=rows)
