"""Fixtures shared by the model tests: the tiny data set's vocabulary sizes and ten of its
requests (built on the session fixtures ``tiny_data`` / ``tiny_meta`` of tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from longseq.data.reader import list_parquet_files
from longseq.model.embeddings import TableSizes


@pytest.fixture(scope="module")
def requests_table(tiny_data: Path):
    """Ten requests of the tiny data set, with ragged histories (incl. a 0-event window)."""
    return pq.read_table(list_parquet_files(tiny_data / "train")[0]).slice(3, 10)


@pytest.fixture(scope="module")
def sizes(tiny_meta: dict) -> TableSizes:
    """The tiny data set's table sizes."""
    return TableSizes(tiny_meta["num_items"], tiny_meta["num_categories"], tiny_meta["num_actions"])
