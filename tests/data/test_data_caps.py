"""Data as untrusted input (issue 25, cases 5, 6 and 7): a manifest whose row counts disagree
with the footers the reader opens is refused, a manifest entry that is not an integer is named,
and ``data.max_targets`` caps the targets of one request as ``data.max_hist_len`` caps its
history (cut, counted, reported once)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from longseq.data.manifest import MANIFEST_NAME, ManifestWarning
from longseq.data.reader import RequestReader
from longseq.log import setup_logging


@pytest.fixture
def data(tiny_data: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny data set (its manifest gets edited)."""
    return Path(shutil.copytree(tiny_data, tmp_path / "data"))


def _edit_manifest(split: Path, change) -> None:
    m = json.loads((split / MANIFEST_NAME).read_text())
    change(m["files"][0])
    (split / MANIFEST_NAME).write_text(json.dumps(m))


def _lie_about_row_counts(entry: dict) -> None:
    """Move two rows from row group 1 to row group 0: the total and the sizes still match."""
    entry["row_groups"][0] += 2
    entry["row_groups"][1] -= 2


def _epoch_ids(reader: RequestReader) -> list[int]:
    return [i for t in reader for i in t.column("request_id").to_pylist()]


def test_a_manifest_lying_about_row_counts_is_refused_by_the_reader(data: Path):
    split = data / "train"
    honest = _epoch_ids(RequestReader(split, 16, shuffle=False))
    _edit_manifest(split, _lie_about_row_counts)
    reader = RequestReader(split, 16, shuffle=False)  # starts from the manifest: no footer read
    with pytest.raises(ValueError) as e:
        _epoch_ids(reader)
    msg = str(e.value)
    assert "part-00000.parquet" in msg and "row group 0" in msg and MANIFEST_NAME in msg
    assert "python -m longseq.data.index" in msg
    assert len(honest) == len(set(honest)) == 102  # the honest manifest reads every row once


def test_the_training_stream_refuses_a_lying_manifest(data: Path):
    import torch

    from longseq.data.config import DataConfig
    from longseq.data.stream import build_train_stream

    _edit_manifest(data / "train", _lie_about_row_counts)
    cfg = DataConfig(path=str(data), batch_size=8, shuffle_buffer=16)
    stream = build_train_stream(cfg, 0, 1, 0, ["click"], torch.device("cpu"))
    with pytest.raises(ValueError, match=r"row group \d+ has \d+ rows, .*_manifest\.json says"):
        for _ in range(20):
            next(iter(stream))


@pytest.mark.parametrize("key,value", [("bytes", "94453"), ("bytes", 1.5), ("rows", True)])
def test_a_manifest_entry_that_is_not_an_integer_is_named(data: Path, key: str, value):
    split = data / "train"
    _edit_manifest(split, lambda e: e.update({key: value}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = RequestReader(split, 16, shuffle=False)
    msgs = [str(w.message) for w in caught if issubclass(w.category, ManifestWarning)]
    assert any(f"'{key}' must be an integer" in m and "part-00000.parquet" in m for m in msgs)
    assert len(_epoch_ids(reader)) == 102  # read from the footers instead


def _targets(table) -> np.ndarray:
    return pc.list_value_length(table.column("tgt_item_id")).to_numpy()


def test_max_targets_cuts_and_reports_once(tiny_data: Path, capsys):
    setup_logging(0)  # warnings go to stderr as under the CLIs
    full = next(iter(RequestReader(tiny_data / "train", 200, shuffle=False, max_targets=-1)))
    cut_reader = RequestReader(tiny_data / "train", 200, shuffle=False, max_targets=3)
    cut = next(iter(cut_reader))
    assert (_targets(full) == 8).all() and (_targets(cut) == 3).all()
    assert cut_reader.tgt_cut == full.num_rows
    err = capsys.readouterr().err
    assert err.count("data.max_targets=3") == 1 and ".parquet" in err
    for col in ("tgt_item_id", "tgt_category_id", "tgt_click", "tgt_p_true"):  # the first 3
        a, b = full.column(col).to_pylist(), cut.column(col).to_pylist()
        assert all(y == x[:3] for x, y in zip(a, b, strict=True)), col
    # default: meta.json's targets_per_request (every tiny request fits)
    assert RequestReader(tiny_data / "train", 8).max_targets == 8


def test_max_targets_reaches_the_training_batches(tiny_data: Path):
    import torch

    from longseq.data.config import DataConfig
    from longseq.data.stream import build_train_stream

    cfg = DataConfig(path=str(tiny_data), batch_size=8, shuffle_buffer=16, max_targets=2)
    batch = next(iter(build_train_stream(cfg, 0, 1, 0, ["click"], torch.device("cpu"))))
    assert batch.num_targets.tolist() == [2] * 8


def test_max_targets_is_range_checked():
    from longseq.data.config import DataConfig

    with pytest.raises(ValueError, match=r"data\.max_targets must be >= 1, 0 .* or -1"):
        DataConfig(path="x", max_targets=-2).validate("data")
