"""`longseq.data.source.check_split`: the one data-source check of train, eval and serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from longseq.data.source import check_split


def test_a_split_with_parquet_files_passes(tiny_data: Path) -> None:
    assert check_split(tiny_data, "train") == tiny_data / "train"
    assert check_split(str(tiny_data), "test", "trainer.eval_split") == tiny_data / "test"


def test_missing_data_set_names_data_path(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=rf"data\.path={tmp_path / 'nope'}: .* not a folder"
    ):
        check_split(tmp_path / "nope", "train")


def test_missing_split_names_the_key_and_lists_the_splits(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "_tmp").mkdir()  # not a split
    with pytest.raises(FileNotFoundError) as e:
        check_split(tmp_path, "valid", "trainer.eval_split")
    msg = str(e.value)
    assert "trainer.eval_split=valid" in msg and "no 'valid' split" in msg, msg
    assert "its splits: train;" in msg and f"data.path={tmp_path}" in msg, msg


def test_split_without_parquet_files_names_the_folder(tmp_path: Path) -> None:
    (tmp_path / "test" / "sub").mkdir(parents=True)
    (tmp_path / "test" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"data\.split=test: .*test holds no \.parquet"):
        check_split(tmp_path, "test")
