"""Bad side features: each case stops the reader (and the offline validator) with a message
naming the file, row group, row, request_id and column; a wrong type or a missing column fails at
start-up naming the file and the column; ``meta.json`` declarations are checked by key."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longseq.data.feature_checks import feature_problems
from longseq.data.features import FeatureSpec
from longseq.data.meta import DatasetMeta
from longseq.data.reader import RequestReader
from longseq.datasets.validate import validate_path

SPECS = (
    FeatureSpec("age", "user", "id", cardinality=5),
    FeatureSpec("tags", "user", "multi_hot", cardinality=6),
    FeatureSpec("activity", "user", "dense", transform="log1p"),
    FeatureSpec("creator", "candidate", "id", cardinality=7),
    FeatureSpec("genres", "candidate", "multi_hot", cardinality=4, pooling="sum"),
    FeatureSpec("duration", "candidate", "dense"),
)
GROUP, ROW = 1, 3


def _features(t: pa.Table, rng: np.random.Generator) -> pa.Table:
    n = t.num_rows
    lens = [len(x) for x in t.column("tgt_item_id").to_pylist()]
    cols = {
        "feat_age": pa.array(rng.integers(0, 5, n), pa.int64()),
        "feat_tags": pa.array(
            [list(rng.integers(0, 6, i % 3)) for i in range(n)], pa.list_(pa.int64())
        ),
        "feat_activity": pa.array(rng.uniform(0, 9, n)),
        "tgt_feat_creator": pa.array(
            [list(rng.integers(0, 7, k)) for k in lens], pa.list_(pa.int64())
        ),
        "tgt_feat_genres": pa.array(
            [[list(rng.integers(0, 4, j % 3)) for j in range(k)] for k in lens],
            pa.list_(pa.list_(pa.int64())),
        ),
        "tgt_feat_duration": pa.array([list(rng.uniform(1, 60, k)) for k in lens]),
    }
    for name, col in cols.items():
        t = t.append_column(name, col)
    return t


@pytest.fixture(scope="module")
def feature_data(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny data set with every feature kind, declared in its meta.json."""
    out = tmp_path_factory.mktemp("features") / "data"
    shutil.copytree(tiny_data, out)
    rng = np.random.default_rng(0)
    for f in sorted(out.rglob("*.parquet")):
        pf = pq.ParquetFile(f)
        size = pf.metadata.row_group(0).num_rows
        pq.write_table(_features(pf.read(), rng), f, row_group_size=size)
    for manifest in out.rglob("_manifest.json"):
        manifest.unlink()
    meta = DatasetMeta.read(out)
    DatasetMeta.from_dict({**meta.to_dict(), "features": [s.to_dict() for s in SPECS]}).write(out)
    return out


def _edit(column: str, fn: Callable) -> Callable[[pa.Table, int], pa.Table]:
    def go(t: pa.Table, row: int) -> pa.Table:
        values = t.column(column).to_pylist()
        values[row] = fn(values[row])
        arr = pa.array(values, type=t.schema.field(column).type)
        return t.set_column(t.schema.get_field_index(column), column, arr)

    return go


def _first_nonempty(v: list) -> list:
    i = next(j for j, x in enumerate(v) if x)
    return v[:i] + [[4] + v[i][1:]] + v[i + 1 :]


KINDS: dict[str, tuple[str, str, Callable[[pa.Table, int], pa.Table]]] = {
    "user_id_too_big": ("feat_age", "id >= cardinality 5", _edit("feat_age", lambda v: 5)),
    "user_id_negative": ("feat_age", "negative id", _edit("feat_age", lambda v: -1)),
    "multi_hot_too_big": ("feat_tags", "cardinality 6", _edit("feat_tags", lambda v: [1, 6])),
    "dense_nan": ("feat_activity", "NaN or inf", _edit("feat_activity", lambda v: float("nan"))),
    "dense_inf": ("tgt_feat_duration", "NaN or inf",
                  _edit("tgt_feat_duration", lambda v: v[:-1] + [float("inf")])),
    "candidate_length": ("tgt_feat_creator", "differs from 'tgt_item_id'",
                         _edit("tgt_feat_creator", lambda v: v[:-1])),
    "candidate_multi_hot_too_big": ("tgt_feat_genres", "cardinality 4",
                                    _edit("tgt_feat_genres", _first_nonempty)),
    "null_user_feature": ("feat_age", "null", _edit("feat_age", lambda v: None)),
}  # fmt: skip


def _corrupt(src: Path, dst: Path, fn: Callable[[pa.Table, int], pa.Table]) -> tuple[Path, int]:
    shutil.copytree(src, dst)
    path = sorted((dst / "train").glob("*.parquet"))[0]
    pf = pq.ParquetFile(path)
    size = pf.metadata.row_group(0).num_rows
    row = GROUP * size + ROW
    table = fn(pf.read(), row)
    pq.write_table(table, path, row_group_size=size)
    return path, table.column("request_id")[row].as_py()


def test_clean_feature_data_reads_and_validates(feature_data: Path) -> None:
    rows = sum(t.num_rows for t in RequestReader(feature_data / "train", 16, shuffle=False))
    assert rows == DatasetMeta.read(feature_data).num_requests["train"]
    rep = validate_path(feature_data, max_errors=50)
    assert rep.num_problems == 0, rep.problems
    for f in sorted(feature_data.rglob("*.parquet")):
        assert feature_problems(pq.read_table(f), SPECS) == []


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_bad_feature_is_named(feature_data: Path, tmp_path: Path, kind: str) -> None:
    column, what, fn = KINDS[kind]
    path, rid = _corrupt(feature_data, tmp_path / "bad", fn)
    with pytest.raises(ValueError) as err:
        list(RequestReader(tmp_path / "bad" / "train", 16, shuffle=False))
    msg = str(err.value)
    assert str(path) in msg and f"(row group {GROUP})" in msg, msg
    assert f"row {ROW} (request_id={rid})" in msg and repr(column) in msg and what in msg, msg
    rep = validate_path(tmp_path / "bad", max_errors=50)
    assert any(repr(column) in p and what in p and f"request_id={rid}" in p for p in rep.problems)


@pytest.mark.parametrize(
    ("column", "array", "what"),
    [
        ("feat_age", lambda n: pa.array(np.zeros(n)), "type double, expected int64"),
        ("tgt_feat_duration", lambda n: pa.array(np.zeros(n)), "expected list<double"),
    ],
)
def test_wrong_type_fails_at_start(feature_data: Path, tmp_path: Path, column, array, what) -> None:
    def retype(t: pa.Table, row: int) -> pa.Table:
        return t.set_column(t.schema.get_field_index(column), column, array(t.num_rows))

    path, _ = _corrupt(feature_data, tmp_path / "bad", retype)
    with pytest.raises(ValueError, match=rf"{path}: column '{column}': .*{what}"):
        RequestReader(tmp_path / "bad" / "train", 16, shuffle=False)


def test_missing_declared_column_fails_at_start(feature_data: Path, tmp_path: Path) -> None:
    path, _ = _corrupt(feature_data, tmp_path / "bad", lambda t, r: t.drop_columns(["feat_tags"]))
    with pytest.raises(ValueError, match=r"column 'feat_tags': missing column \(feature declared"):
        RequestReader(tmp_path / "bad" / "train", 16, shuffle=False)


@pytest.mark.parametrize(
    ("entry", "what"),
    [
        ({"name": "Age", "side": "user", "kind": "id", "cardinality": 3}, "must match"),
        ({"name": "age", "side": "item", "kind": "id", "cardinality": 3}, "side='item'"),
        ({"name": "age", "side": "user", "kind": "id"}, "cardinality must be an integer >= 1"),
        ({"name": "age", "side": "user", "kind": "dense", "std": 0}, "std finite and > 0"),
        ({"name": "age", "side": "user", "kind": "id", "cardinality": 3, "size": 1},
         "unknown key 'size'"),
        ({"side": "user", "kind": "id"}, "lacks key 'name'"),
    ],
)  # fmt: skip
def test_bad_declarations_name_the_key(tmp_path: Path, entry: dict, what: str) -> None:
    doc = {"num_items": 5, "num_categories": 2, "num_actions": 1, "features": [entry]}
    (tmp_path / "meta.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'meta.json'} features.*{what}"):
        DatasetMeta.read(tmp_path)


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    e = {"name": "a", "side": "user", "kind": "dense"}
    doc = {"num_items": 5, "num_categories": 2, "num_actions": 1, "features": [e, e]}
    with pytest.raises(ValueError, match="name 'a' declared twice"):
        DatasetMeta.from_dict(doc, "m.json")
