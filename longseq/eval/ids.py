"""Evaluation data against the checkpoint's vocabularies: every id must have a table row.

A data set newer than the checkpoint (or with another vocabulary) holds ids beyond the trained
tables; looked up they would fail deep inside the embedding kernel (a bare IndexError on CPU, an
unchecked out-of-bounds read with some GPU or sharded kernels). `check_ids` reads the id columns
(the values, not the Parquet statistics, which are as untrusted as the data) before any lookup,
on every rank, and names the first offender.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from longseq.data.checks import ID_LIMIT_KEYS


def _column_range(pf: pq.ParquetFile, group: int, name: str) -> tuple[int, int] | None:
    """(min, max) of a list column's elements in one row group (None: empty)."""
    flat = pc.list_flatten(pf.read_row_group(group, columns=[name]).column(name))
    if len(flat) == 0:
        return None
    mm = pc.min_max(flat)
    return int(mm["min"].as_py()), int(mm["max"].as_py())


def check_ids(split_dir: str | Path, tables: dict[str, int]) -> None:
    """Raise ``ValueError`` naming file, row group, column, the offending id and the table size
    when an id of ``split_dir`` is negative or not below the checkpoint's ``tables`` size
    (``{"num_items": ..., "num_categories": ..., "num_actions": ...}``)."""
    from longseq.data.shards import list_parquet_files

    for f in list_parquet_files(split_dir):
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        for g in range(pf.num_row_groups):
            for name, key in ID_LIMIT_KEYS.items():
                size = tables.get(key)
                if name not in names or size is None:
                    continue
                rng = _column_range(pf, g, name)
                if rng is None:
                    continue
                lo, hi = rng
                if hi >= int(size) or lo < 0:
                    bad = hi if hi >= int(size) else lo
                    raise ValueError(
                        f"{f} (row group {g}): column {name!r} holds id {bad}, but the "
                        f"checkpoint's table has {key}={size} rows (ids 0..{int(size) - 1}): "
                        "this data uses another or a newer vocabulary than the model was "
                        "trained on (evaluate data with the training data set's ids)"
                    )
