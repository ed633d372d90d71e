"""`SplitWriter`: stream request tables into a split folder of Parquet files, then its manifest.

Used by the generator (`longseq.datasets.synth`) and the converters; the format it writes is
`longseq.data.format`'s, the manifest `longseq.data.manifest`'s.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longseq.data.format import REQUEST_SCHEMA
from longseq.data.manifest import write_manifest


class SplitWriter:
    """Streams tables into ``folder/part-NNNNN.parquet`` files of fixed-size row groups.

    Rows are buffered until a full row group is available; a file holds at most
    ``rows_per_file`` rows (rounded up to whole row groups). :meth:`close` writes the last
    partial row group and the folder's manifest (``_manifest.json``, `longseq.data.manifest`:
    readers then start without reading every footer) and returns the files; a split without rows
    still gets one empty file.
    """

    def __init__(
        self,
        folder: str | Path,
        schema: pa.Schema = REQUEST_SCHEMA,
        rows_per_file: int = 100_000,
        row_group_size: int = 256,
        compression: str = "zstd",
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema, self.compression = schema, compression
        self.rows_per_file, self.row_group_size = rows_per_file, row_group_size
        self.files: list[Path] = []
        self._footers: list[pq.FileMetaData] = []  # one per closed file (for the manifest)
        self._buf: list[pa.Table] = []
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_file = 0

    def add(self, table: pa.Table) -> None:
        """Write every complete row group; buffer the rest.

        The buffered rows are *copied*: an Arrow slice shares its table's buffers, so keeping a
        slice would pin the whole added table (a history chunk of hundreds of MB) in memory.
        """
        pos, n, rg = 0, table.num_rows, self.row_group_size
        if self._buffered:
            take = min(rg - self._buffered, n)
            self._keep(table.slice(0, take))
            pos = take
            if self._buffered == rg:
                self._write(pa.concat_tables(self._buf))
                self._buf, self._buffered = [], 0
        while n - pos >= rg:
            self._write(table.slice(pos, rg))
            pos += rg
        if pos < n:
            self._keep(table.slice(pos))

    def _keep(self, part: pa.Table) -> None:
        self._buf.append(part.take(pa.array(np.arange(part.num_rows))))  # a copy
        self._buffered += part.num_rows

    def _write(self, table: pa.Table) -> None:
        if self._writer is None or self._rows_in_file >= self.rows_per_file:
            self._close_file()
            path = self.folder / f"part-{len(self.files):05d}.parquet"
            self._writer = pq.ParquetWriter(
                path, self.schema, compression=self.compression, metadata_collector=self._footers
            )
            self.files.append(path)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._rows_in_file += table.num_rows

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer, self._rows_in_file = None, 0

    def close(self) -> list[Path]:
        """Flush the buffer, close the current file, write the manifest; return the files."""
        if self._buffered or not self.files:
            self._write(pa.concat_tables(self._buf) if self._buf else self.schema.empty_table())
        self._buf, self._buffered = [], 0
        self._close_file()
        write_manifest(self.folder, dict(zip(map(str, self.files), self._footers, strict=True)))
        return self.files
