"""A split writer that never pins a large input table in memory.

Like :class:`longseq.data.format.SplitWriter` (``part-NNNNN.parquet`` files of fixed-size row
groups, at most ``rows_per_file`` rows each, an empty file for an empty split), but the rows left
over after the complete row groups of an added table are *copied* into the buffer: Arrow slices
share the buffers of their table, so a kept slice would hold a whole history chunk alive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


class PartWriter:
    """Streams tables into ``folder/part-NNNNN.parquet`` (row groups of ``row_group_size``)."""

    def __init__(
        self,
        folder: Path,
        schema: pa.Schema,
        rows_per_file: int,
        row_group_size: int,
        compression: str,
    ) -> None:
        self.folder, self.schema = Path(folder), schema
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows_per_file, self.rg, self.compression = rows_per_file, row_group_size, compression
        self.files: list[Path] = []
        self._buf: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0

    def add(self, table: pa.Table) -> None:
        """Write every complete row group; copy the remainder into the buffer."""
        pos, n = 0, table.num_rows
        if self._buffered:
            take = min(self.rg - self._buffered, n)
            self._keep(table.slice(0, take))
            pos = take
            if self._buffered == self.rg:
                self._write(pa.concat_tables(self._buf))
                self._buf, self._buffered = [], 0
        while n - pos >= self.rg:
            self._write(table.slice(pos, self.rg))
            pos += self.rg
        if pos < n:
            self._keep(table.slice(pos))

    def _keep(self, part: pa.Table) -> None:
        self._buf.append(part.take(pa.array(np.arange(part.num_rows))))  # a copy
        self._buffered += part.num_rows

    def _write(self, table: pa.Table) -> None:
        if self._writer is None or self._rows_in_file >= self.rows_per_file:
            self._close_file()
            path = self.folder / f"part-{len(self.files):05d}.parquet"
            self._writer = pq.ParquetWriter(path, self.schema, compression=self.compression)
            self.files.append(path)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._rows_in_file += table.num_rows

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._rows_in_file = None, 0

    def close(self) -> list[Path]:
        """Flush the buffer, close the current file and return all files written."""
        if self._buffered or not self.files:
            self._write(pa.concat_tables(self._buf) if self._buf else self.schema.empty_table())
        self._buf, self._buffered = [], 0
        self._close_file()
        return self.files
