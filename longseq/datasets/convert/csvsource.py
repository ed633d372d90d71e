"""Streaming CSV input with errors that name the file, the line and the column.

A raw file is read in blocks (``pyarrow.csv.open_csv``) and never held whole. When pyarrow
rejects a block (a non-number in a number column, a wrong field count), the file is re-scanned
as text to report the first offending line.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv


@dataclass
class CsvSpec:
    """How to read one raw file.

    Attributes:
        path: the file.
        types: columns to read and their Arrow types.
        names: column names in file order for a header-less file (``None``: the first line
            is a header and must hold every column in ``types``).
        delimiter: one character (MovieLens-1M's ``::`` is read as ``:`` with empty columns
            between).
        kind: what the rows are, passed to the data set's normaliser (e.g. ``standard``).
        quote: ``"`` quotes a field (CSV); ``False``: no quoting, a line is a row (RecBole's
            tab-separated atomic files), so a row with the wrong number of fields is reported
            by its exact line.
    """

    path: Path
    types: dict[str, pa.DataType]
    names: list[str] | None = None
    delimiter: str = ","
    kind: str = ""
    quote: bool = True
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def header(self) -> bool:
        return self.names is None


class _Counting(io.RawIOBase):
    """A read-only file that reports the bytes read (for a progress bar)."""

    def __init__(self, path: Path, on_bytes: Callable[[int], None]) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._on = on_bytes

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = self._f.readinto(b)
        if n:
            self._on(n)
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def read_header(spec: CsvSpec) -> list[str]:
    """The header fields of ``spec.path``, checked to hold every needed column."""
    if not spec.path.is_file():
        raise FileNotFoundError(f"{spec.path}: file not found")
    with open(spec.path, encoding="utf-8", errors="replace") as f:
        first = f.readline().rstrip("\r\n")
    fields = [c.strip().strip('"') for c in first.split(spec.delimiter)]
    missing = [c for c in spec.types if c not in fields]
    if missing:
        raise ValueError(
            f"{spec.path}: line 1 (header): missing column(s) {missing}; found {fields}"
        )
    return fields


def _options(spec: CsvSpec, block_bytes: int, as_text: bool):
    types = {c: (pa.string() if as_text else t) for c, t in spec.types.items()}
    read = pcsv.ReadOptions(block_size=block_bytes, column_names=spec.names)
    parse = pcsv.ParseOptions(delimiter=spec.delimiter, quote_char='"' if spec.quote else False)
    conv = pcsv.ConvertOptions(column_types=types, include_columns=list(spec.types))
    return read, parse, conv


def iter_blocks(
    spec: CsvSpec, block_bytes: int, on_bytes: Callable[[int], None] = lambda n: None
) -> Iterator[tuple[pa.RecordBatch, int]]:
    """Yield ``(batch, first_line)`` for the file: the needed columns with their types and the
    1-based line number of the batch's first row. Raises ``ValueError`` naming file and line."""
    if spec.header:
        read_header(spec)
    elif not spec.path.is_file():
        raise FileNotFoundError(f"{spec.path}: file not found")
    line = 2 if spec.header else 1
    src = _Counting(spec.path, on_bytes)
    try:
        reader = pcsv.open_csv(src, *_options(spec, block_bytes, as_text=False))
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            yield batch, line
            line += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(_locate(spec, block_bytes, str(e), line)) from None
    finally:
        src.close()


def _locate(spec: CsvSpec, block_bytes: int, message: str, near: int) -> str:
    """A message naming the first line whose value does not convert, found by re-reading as
    text; falls back to pyarrow's message and the block's first line."""
    line = 2 if spec.header else 1
    try:
        reader = pcsv.open_csv(spec.path, *_options(spec, block_bytes, as_text=True))
        for batch in reader:
            for name, typ in spec.types.items():
                col = batch.column(name)
                try:
                    pc.cast(col, typ)
                    continue
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
                for i, v in enumerate(col.to_pylist()):
                    try:
                        pc.cast(pa.array([v], pa.string()), typ)
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                        return f"{spec.path}: line {line + i}, column {name!r}: cannot read {v!r} as {typ}"
            line += batch.num_rows
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        return _field_count_error(spec) or f"{spec.path}: near line {line}: {e}"
    return f"{spec.path}: near line {near}: {message}"


def _field_count_error(spec: CsvSpec) -> str | None:
    """Without quoting a line is a row: the first non-empty line whose number of fields differs
    from the header's (or ``names``), as a message; ``None`` with quoting or when none differs."""
    if spec.quote:
        return None
    want = len(spec.names) if spec.names is not None else None
    with open(spec.path, encoding="utf-8", errors="replace", newline="") as f:
        for n, text in enumerate(f, 1):
            text = text.rstrip("\r\n")
            got = text.count(spec.delimiter) + 1
            if want is None:
                want = got  # the header line
            elif text and got != want:
                return f"{spec.path}: line {n}: {got} fields, expected {want}"
    return None


def bad_row_error(spec: CsvSpec, first_line: int, row: int, column: str, what: str) -> ValueError:
    """A ``ValueError`` for row ``row`` of a batch that started at ``first_line``."""
    return ValueError(f"{spec.path}: line {first_line + row}, column {column!r}: {what}")
