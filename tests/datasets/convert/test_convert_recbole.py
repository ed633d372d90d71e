"""RecBole converter (``dataset=recbole``) on small atomic files shaped like ML-100K: the
documented request rules, categories by rule, the typed side tables, string tokens, agreement
with ``dataset=movielens`` on the same ratings, and the real CLI followed by the validator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from convert_ref import convert, group_rule, history_rule, read_rows, split_of
from recbole_fixtures import GENRES, item_genres, write_atomic, write_lines, write_ml100k_layout

from longseq.datasets.convert import converter_for
from longseq.datasets.convert.atomic import token_ids
from longseq.datasets.convert.config import ConvertConfig
from longseq.datasets.convert.features import FieldFeature
from longseq.datasets.validate import validate_path

GAP, MAXT, MOVIES = 1800, 8, 30
OPTS = {"gap_s": GAP, "max_targets": MAXT, "max_hist_len": 0}


def _reference(rows: list[tuple], cut: dict, threshold: float) -> dict[str, list]:
    by_user = defaultdict(list)
    for seq, (u, m, r, t) in enumerate(rows):
        by_user[u].append({"ts": t, "seq": seq, "item": m, "rating": r})
    out = defaultdict(list)
    for u, evs in by_user.items():
        evs.sort(key=lambda e: (e["ts"], e["seq"]))
        for req in group_rule(evs, GAP, MAXT):
            hist = history_rule(evs, req[0]["ts"], 0)
            out[split_of(req[0]["ts"], cut)].append(
                (u, req[0]["ts"], tuple(e["item"] for e in req),
                 tuple(int(e["rating"] >= threshold) for e in req),
                 tuple(e["item"] for e in hist), tuple(round(2 * e["rating"]) for e in hist))
            )  # fmt: skip
    return out


def _got(out: Path, split: str) -> list[tuple]:
    return [(r["user_id"], r["request_ts"], tuple(r["tgt_item_id"]), tuple(r["tgt_like"]),
             tuple(r["hist_item_id"]), tuple(r["hist_action"])) for r in read_rows(out, split)]  # fmt: skip


def test_converts_as_documented(tmp_path: Path) -> None:
    rows = write_atomic(tmp_path / "raw" / "ml-100k", movies=MOVIES)
    stats = convert("recbole", tmp_path / "raw", tmp_path / "out", bucket_mb=0.002, opts=OPTS)
    out = tmp_path / "out"
    assert validate_path(out).ok
    assert stats["variant"] == "RecBole atomic files (ml-100k)" and stats["input"]["rows"] == len(
        rows
    )
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tasks"] == ["like"] and meta["num_actions"] == 11
    ref = _reference(rows, stats["cutoffs"], 4.0)
    for split in ("train", "valid", "test"):
        got = _got(out, split)
        assert got and sorted(got) == sorted(ref[split]), split
    # category = the first genre of the class field, genres numbered in name order; the movie
    # missing from .item has the unknown category (-1)
    firsts = sorted({item_genres(m)[0] for m in range(1, MOVIES)})
    assert meta["num_categories"] == len(firsts) + 1
    for r in read_rows(out, "train"):
        for m, c in zip(r["tgt_item_id"], r["tgt_category_id"]):
            assert c == (-1 if m == MOVIES else firsts.index(item_genres(m)[0]))


def test_combination_rule_and_threshold(tmp_path: Path) -> None:
    rows = write_atomic(tmp_path / "raw", movies=MOVIES, seed=3)
    opts = {**OPTS, "category_rule": "combination", "threshold": 3.0}
    stats = convert("recbole", tmp_path / "raw", tmp_path / "out", opts=opts)
    combos = sorted({"|".join(sorted(item_genres(m))) for m in range(1, MOVIES)})
    assert len(combos) > len({item_genres(m)[0] for m in range(1, MOVIES)})  # a real difference
    r = read_rows(tmp_path / "out", "train")[0]
    got = [combos[c] for m, c in zip(r["tgt_item_id"], r["tgt_category_id"]) if m != MOVIES]
    want = ["|".join(sorted(item_genres(m))) for m in r["tgt_item_id"] if m != MOVIES]
    assert got == want
    ref = _reference(rows, stats["cutoffs"], 3.0)
    assert sorted(_got(tmp_path / "out", "test")) == sorted(ref["test"])


def test_equals_the_movielens_converter_on_the_same_ratings(tmp_path: Path) -> None:
    rows = write_atomic(tmp_path / "rb", movies=MOVIES, seed=5)
    write_ml100k_layout(tmp_path / "gl", rows, MOVIES)
    convert("recbole", tmp_path / "rb", tmp_path / "a", opts={**OPTS, "features": False})
    convert("movielens", tmp_path / "gl", tmp_path / "b", opts={**OPTS, "features": False})
    for split in ("train", "valid", "test"):
        a = pq.read_table(next((tmp_path / "a" / split).glob("*.parquet")))
        b = pq.read_table(next((tmp_path / "b" / split).glob("*.parquet")))
        assert a.equals(b), split
    # with features on, both give the same genre ids (the same sorted genre names)
    convert("recbole", tmp_path / "rb", tmp_path / "fa", opts=OPTS)
    convert("movielens", tmp_path / "gl", tmp_path / "fb", opts=OPTS)
    a, b = read_rows(tmp_path / "fa", "train"), read_rows(tmp_path / "fb", "train")
    assert [r["tgt_feat_genres"] for r in a] == [r["tgt_feat_genres"] for r in b]


def test_side_tables_are_parsed_by_their_declared_types(tmp_path: Path) -> None:
    write_atomic(tmp_path, movies=MOVIES)
    conv = converter_for(ConvertConfig(dataset="recbole", src=str(tmp_path), out="x"))
    conv.inputs(tmp_path)
    conv.prepare(tmp_path)
    items, users = conv.item_table, conv.user_table
    assert items is not None and users is not None
    assert list(items.columns) == ["movie_title", "release_year", "class"]
    assert [c.type for c in items.columns.values()] == ["token_seq", "token", "token_seq"]
    row = int(items.rows_of(np.array([7]))[0])
    assert items.columns["class"].tokens(row) == item_genres(7)
    assert items.columns["movie_title"].tokens(row) == ["Caf\u00e9", "Story", "7"]
    assert items.columns["release_year"].tokens(row) == [str(1990 + 7 % 9)]
    assert set(items.columns["class"].vocab) <= set(GENRES)
    assert items.rows_of(np.array([MOVIES, 1]))[0] == -1
    assert users.key == "user_id" and list(users.columns) == [
        "age", "gender", "occupation", "zip_code"
    ]  # fmt: skip
    assert users.columns["gender"].tokens(int(users.rows_of(np.array([3]))[0])) == ["F"]


def test_float_fields_and_string_tokens(tmp_path: Path) -> None:
    """Amazon-like tokens (not integers) are hashed to negative ids; float and float_seq
    fields of a side table become numbers (NaN where empty)."""
    users = ["A2X", "007", "7", "u-1"]
    lines = [f"{u}\tB0{i % 3}\t{1 + i % 5}.0\t{1_600_000_000 + 60 * i}"
             for i, u in enumerate(users * 6)]  # fmt: skip
    write_lines(tmp_path / "amz.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float", lines)  # fmt: skip
    write_lines(tmp_path / "amz.item", "item_id:token\tprice:float\temb:float_seq\tcategories:token_seq",
                ["B00\t9.5\t0.5 1\tBooks  Fiction", "B01\t\t\tBooks", "B02\t3\t2 -1 4\t"])  # fmt: skip
    opts = {"category_field": "categories", "user_features": [], "item_features": []}
    stats = convert("recbole", tmp_path, tmp_path / "out", opts=opts)
    assert validate_path(tmp_path / "out").ok and stats["items"] == 3
    ids = token_ids(pa.array(users))
    assert ids[2] == 7 and ids[1] != 7 and (ids[[0, 1, 3]] < 0).all()
    assert (token_ids(pa.array(users)) == ids).all()  # the id depends on the token alone
    got = {r["user_id"] for s in ("train", "valid", "test") for r in read_rows(tmp_path / "out", s)}
    assert got <= set(ids.tolist()) and len(got) >= 2
    conv = converter_for(ConvertConfig(dataset="recbole", src=str(tmp_path), out="x"))
    conv.cfg.recbole.category_field = "categories"
    conv.cfg.recbole.item_features = [
        FieldFeature("price", "dense"),
        FieldFeature("categories", "multi_hot"),
    ]
    conv.inputs(tmp_path)
    conv.prepare(tmp_path)
    cols = conv.item_table.columns
    assert np.array_equal(cols["price"].values, [9.5, np.nan, 3.0], equal_nan=True)
    assert cols["emb"].values.tolist() == [0.5, 1.0, 2.0, -1.0, 4.0]
    assert cols["emb"].offsets.tolist() == [0, 2, 2, 5]
    assert [cols["categories"].tokens(i) for i in range(3)] == [["Books", "Fiction"], ["Books"], []]
    assert conv.category_names == ["Books"]
    price, cats = conv.side_features  # a float field as dense, a token_seq field as multi-hot
    keys = token_ids(pa.array(["B00", "B01", "B02", "B09"]))
    assert np.array_equal(price.raw(keys), [9.5, np.nan, 3.0, np.nan], equal_nan=True)
    assert cats.column(keys).to_pylist() == [[1, 2], [1], [0], [0]]  # Books=1, Fiction=2


def test_cli_then_validator(tmp_path: Path) -> None:
    write_atomic(tmp_path / "raw", movies=MOVIES)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m"]
    conv = subprocess.run(
        [*run, "longseq.datasets.convert", "dataset=recbole", f"src={tmp_path / 'raw'}",
         f"out={tmp_path / 'out'}", "recbole.gap_s=600", "progress=false"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert conv.returncode == 0, conv.stderr
    assert "converted recbole (RecBole atomic files (ml-100k))" in conv.stdout
    assert (
        json.loads((tmp_path / "out" / "meta.json").read_text())["config"]["recbole"]["gap_s"]
        == 600
    )
    val = subprocess.run([*run, "longseq.datasets.validate", f"path={tmp_path / 'out'}", "progress=false"],
                         capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert val.returncode == 0 and val.stdout.startswith("OK"), val.stdout + val.stderr
    inter = tmp_path / "raw" / "ml-100k.inter"
    lines = inter.read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\t874724710.5"
    inter.write_text("\n".join(lines) + "\n")
    bad = subprocess.run(conv.args, capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2
    assert (
        f"{inter}: line 4, column 'timestamp:float': 874724710.5 is not a whole number"
        in bad.stderr
    )


@pytest.mark.parametrize("name", ["", "ml-100k"])
def test_name_picks_the_files(tmp_path: Path, name: str) -> None:
    write_atomic(tmp_path / "a", movies=MOVIES)
    if name:
        write_atomic(tmp_path / "b", movies=MOVIES, name="other")  # a second data set beside
    stats = convert("recbole", tmp_path, tmp_path / "out", opts={"name": name})
    assert stats["input"]["files"] == ["ml-100k.inter"]
