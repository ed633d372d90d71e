"""`longseq.data.meta.DatasetMeta`: the one reader and writer of ``meta.json``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longseq.data.meta import META_NAME, DatasetMeta

DOC = {
    "format": "longseq.request.v1",
    "preset": "tiny",
    "tasks": ["click", "like"],
    "num_items": 250,
    "num_categories": 25,
    "num_actions": 4,
    "targets_per_request": 16,
    "hist_len_max": 256,
    "num_requests": {"train": 80, "test": 20},
    "test_cutoff_ts": 1702076625,
    "files": {"train": ["train/part-00000.parquet"], "test": ["test/part-00000.parquet"]},
    "config": {"seed": 1, "oracle_windows": [16, 64], "rho": 0.06},
}


def _write(folder: Path, doc) -> Path:
    f = folder / META_NAME
    f.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return f


def test_reads_every_key_and_keeps_the_extra_ones(tmp_path: Path) -> None:
    f = _write(tmp_path, DOC)
    for where in (tmp_path, f):  # a folder or the file itself
        m = DatasetMeta.read(where)
        assert (m.num_items, m.num_categories, m.num_actions) == (250, 25, 4)
        assert m.tasks == ("click", "like") and m.model_tasks == ["click", "like"]
        assert (m.hist_len_max, m.targets_per_request) == (256, 16)
        assert m.num_requests == {"train": 80, "test": 20}
        assert m.files["train"] == ("train/part-00000.parquet",)
        assert set(m.extra) == {"preset", "test_cutoff_ts", "config"}
        assert m.require_extra("config")["oracle_windows"] == [16, 64]
        assert m.source == str(f)


def test_round_trip_loses_nothing(tmp_path: Path) -> None:
    m = DatasetMeta.read(_write(tmp_path, DOC))
    out = tmp_path / "copy"
    out.mkdir()
    written = m.write(out)
    assert written == out / META_NAME
    assert json.loads(written.read_text()) == DOC  # every key, the extra ones too
    assert DatasetMeta.read(out) == m


def test_minimal_meta_gets_defaults(tmp_path: Path) -> None:
    m = DatasetMeta.read(_write(tmp_path, {"num_items": 9, "num_categories": 3, "num_actions": 2}))
    assert m.tasks == () and m.model_tasks == ["click"]
    assert (m.hist_len_max, m.targets_per_request, m.format) == (0, 0, "")
    assert m.num_requests == {} and m.files == {} and m.extra == {}


def test_find_looks_up_from_a_split_folder_or_a_file(tmp_path: Path) -> None:
    f = _write(tmp_path, DOC)
    (tmp_path / "train").mkdir()
    part = tmp_path / "train" / "part-00000.parquet"
    part.touch()
    for start in (tmp_path, tmp_path / "train", part):
        assert DatasetMeta.find(start) == f.resolve()
    assert DatasetMeta.near(tmp_path / "train").num_items == 250
    empty = tmp_path / "x" / "y" / "z"
    empty.mkdir(parents=True)
    assert DatasetMeta.find(empty) is None and DatasetMeta.near(empty) is None


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / META_NAME} not found"):
        DatasetMeta.read(tmp_path)


def _bad(**change) -> dict:
    doc = {k: v for k, v in DOC.items() if k not in change or change[k] is not None}
    doc.update({k: v for k, v in change.items() if v is not None})
    return doc


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        (_bad(num_items=None), "'num_items'"),
        (_bad(num_actions=None), "'num_actions'"),
        (_bad(num_items="250"), "'num_items'"),
        (_bad(num_categories=2.5), "'num_categories'"),
        (_bad(num_actions=True), "'num_actions'"),
        (_bad(num_items=-1), "'num_items' must be >= 0"),
        (_bad(hist_len_max=-5), "'hist_len_max' must be >= 0"),
        (_bad(targets_per_request="16"), "'targets_per_request'"),
        (_bad(tasks="click"), "'tasks'"),
        (_bad(tasks=[1]), "'tasks'"),
        (_bad(format=1), "'format'"),
        (_bad(num_requests={"train": -1}), "'num_requests'"),
        (_bad(num_requests=[3]), "'num_requests'"),
        (_bad(files={"train": "train/a.parquet"}), "'files'"),
    ],
)
def test_bad_input_names_file_and_key(tmp_path: Path, doc, key: str) -> None:
    f = _write(tmp_path, doc)
    with pytest.raises(ValueError) as e:
        DatasetMeta.read(tmp_path)
    assert str(f) in str(e.value) and key in str(e.value), str(e.value)


def test_in_memory_meta_is_checked_too() -> None:
    with pytest.raises(ValueError, match="'num_items' must be >= 0"):
        DatasetMeta(num_items=-1, num_categories=1, num_actions=1)
    with pytest.raises(ValueError, match="extra holds typed key 'tasks'"):
        DatasetMeta(num_items=1, num_categories=1, num_actions=1, extra={"tasks": []})
    with pytest.raises(KeyError, match="missing key 'config'"):
        DatasetMeta(num_items=1, num_categories=1, num_actions=1).require_extra("config")


def test_meta_json_is_parsed_in_one_module() -> None:
    """No other module of longseq reads ``meta.json`` itself."""
    root = Path(__file__).resolve().parents[2] / "longseq"
    readers = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "meta.py" or p.parent.name != "data"
        for text in [p.read_text()]
        if "json.load" in text and ('"meta.json"' in text or "META_NAME" in text)
    ]
    assert readers == [], readers
