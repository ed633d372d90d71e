"""Side features of the converters on small files shaped like the published ones: the columns and
their ``meta.json`` declarations, values joined to the right rows (checked by hand), the reserved
id of unknown users/items, dense statistics from the train split only, errors naming the file,
the line and the field, and ``features=false``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from convert_ref import convert, read_csv_rows, read_rows
from raw_fixtures import write_kuairand, write_ml_users, write_movielens
from recbole_fixtures import item_genres, write_atomic

from longseq.data.feature_checks import feature_problems, feature_schema_problem
from longseq.data.features import parse_features
from longseq.datasets.convert.features import FieldFeature

SPLITS = ("train", "valid", "test", "test_random")
OPTS = {"gap_s": 1800, "max_targets": 8, "max_hist_len": 0}


def _checked(out: Path) -> tuple[dict, dict]:
    """meta.json and stats.json, after checking every written table against the declarations."""
    meta = json.loads((out / "meta.json").read_text())
    specs = parse_features(meta.get("features"))
    for s in SPLITS:
        for f in (out / s).glob("*.parquet"):
            t = pq.read_table(f)
            assert feature_schema_problem(t.schema, specs, str(f)) is None
            assert feature_problems(t, specs) == [], f
    return meta, json.loads((out / "stats.json").read_text())


def _targets(out: Path, splits=("train", "valid", "test")):
    """(request row, target index, raw item) of every target."""
    return [(r, i, m) for s in splits for r in read_rows(out, s)
            for i, m in enumerate(r["tgt_item_id"])]  # fmt: skip


def test_recbole_ml100k_features(tmp_path: Path) -> None:
    write_atomic(tmp_path / "raw", movies=30)
    user_file = tmp_path / "raw" / "ml-100k.user"
    lines = user_file.read_text().splitlines()
    user_file.write_text("\n".join(lines[:-1]) + "\n")  # the last user (6) becomes unknown
    convert("recbole", tmp_path / "raw", tmp_path / "out", opts=OPTS)
    meta, stats = _checked(tmp_path / "out")
    decl = {f["name"]: f for f in meta["features"]}
    assert list(decl) == ["age", "gender", "occupation", "genres", "year"]
    assert decl["age"] == {"name": "age", "side": "user", "kind": "id", "cardinality": 8}
    assert decl["gender"]["cardinality"] == 3 and decl["occupation"]["cardinality"] == 5
    assert decl["genres"]["kind"] == "multi_hot" and decl["genres"]["side"] == "candidate"
    genres = sorted({g for m in range(1, 30) for g in item_genres(m)})
    assert decl["genres"]["cardinality"] == len(genres) + 1
    occupations = sorted(["technician", "writer", "other", "educator"])
    for s in ("train", "valid", "test"):
        for r in read_rows(tmp_path / "out", s):
            u = r["user_id"]
            if u == 6:
                assert (r["feat_age"], r["feat_gender"], r["feat_occupation"]) == (0, 0, 0)
                continue
            age = 20 + u  # bounds 18, 25, 35, ...: ages 21..25 -> groups 2, 3
            assert r["feat_age"] == 1 + sum(b <= age for b in (18, 25, 35, 45, 50, 56))
            assert r["feat_gender"] == 1 + "FM".index("MF"[u % 2])
            assert r["feat_occupation"] == 1 + occupations.index(
                ["technician", "writer", "other", "educator"][u % 4]
            )
    mean, std = decl["year"]["mean"], decl["year"]["std"]
    for r, i, m in _targets(tmp_path / "out"):
        if m == 30:  # not in .item: the reserved id, the train mean
            assert r["tgt_feat_genres"][i] == [0] and r["tgt_feat_year"][i] == mean
        else:
            assert r["tgt_feat_genres"][i] == sorted(1 + genres.index(g) for g in item_genres(m))
            assert r["tgt_feat_year"][i] == 1990 + m % 9
    years = [1990 + m % 9 for _, _, m in _targets(tmp_path / "out", ("train",)) if m != 30]
    assert mean == pytest.approx(np.mean(years)) and std == pytest.approx(np.std(years))
    assert mean != pytest.approx(np.mean([1990 + m % 9 for _, _, m in _targets(tmp_path / "out") if m != 30]))  # fmt: skip
    st = stats["features"]
    n_train = stats["splits"]["train"]["targets"]
    missing = sum(m == 30 for _, _, m in _targets(tmp_path / "out", ("train",)))
    assert st["year"]["train"] == {"values": n_train, "missing": missing,
                                   "missing_rate": round(missing / n_train, 6)}  # fmt: skip
    assert st["genres"]["vocabulary"] == len(genres) and st["genres"]["hashed"] is False
    assert st["year"]["mean"] == mean and st["age"]["source"] == "ml-100k.user"


def test_hashing_into_a_declared_cardinality(tmp_path: Path) -> None:
    write_atomic(tmp_path / "raw", movies=30)
    item = [FieldFeature("class", "multi_hot", name="genres", cardinality=5)]
    convert("recbole", tmp_path / "raw", tmp_path / "out",
            opts={**OPTS, "user_features": [], "item_features": item})  # fmt: skip
    meta, stats = _checked(tmp_path / "out")
    assert meta["features"] == [
        {"name": "genres", "side": "candidate", "kind": "multi_hot", "cardinality": 5,
         "pooling": "mean"}
    ]  # fmt: skip
    assert stats["features"]["genres"]["hashed"] is True
    assert (
        "feat_age"
        not in pq.read_table(next((tmp_path / "out" / "train").glob("*.parquet"))).schema.names
    )


def test_features_off_writes_the_old_output(tmp_path: Path) -> None:
    write_atomic(tmp_path / "raw", movies=30)
    convert("recbole", tmp_path / "raw", tmp_path / "out", opts={**OPTS, "features": False})
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert "features" not in meta and "features" not in stats
    names = pq.read_table(next((tmp_path / "out" / "train").glob("*.parquet"))).schema.names
    assert not [n for n in names if "feat_" in n]


@pytest.mark.parametrize(
    ("fix", "match"),
    [
        (lambda t: t.replace("\t1993\t", "\t19x3\t", 1),
         r"ml-100k.item: line \d+, field 'release_year': '19x3' is not a number"),
        (lambda t: t.replace("release_year:token", "year:token"),
         r"ml-100k.item: line 1 \(header\): no field 'release_year' "
         r"\(recbole.item_features\[1\].field\)"),
    ],
)  # fmt: skip
def test_bad_feature_input_names_file_line_and_field(tmp_path: Path, fix, match) -> None:
    write_atomic(tmp_path / "raw", movies=30)
    item = tmp_path / "raw" / "ml-100k.item"
    item.write_text(fix(item.read_text()))
    strict = [FieldFeature("class", "multi_hot", name="genres"),
              FieldFeature("release_year", "dense", name="year")]  # not_number=error  # fmt: skip
    opts = {**OPTS, "item_features": strict}
    with pytest.raises(ValueError, match=match):
        convert("recbole", tmp_path / "raw", tmp_path / "out", opts=opts)
    if "19x3" in item.read_text():  # the line named is the line of the value
        line = next(n for n, t in enumerate(item.read_text().splitlines(), 1) if "19x3" in t)
        with pytest.raises(ValueError, match=rf"line {line},"):
            convert("recbole", tmp_path / "raw", tmp_path / "out", opts=opts)


def test_ml100k_defaults_read_a_bad_year_as_missing(tmp_path: Path) -> None:
    """The published ml-100k.item has a release_year 'V' (line 1413): the ML-100K defaults
    (``not_number=missing``) read it as missing (the train mean is written), count it in
    stats.json and keep every row."""
    write_atomic(tmp_path / "raw", movies=30)
    item = tmp_path / "raw" / "ml-100k.item"
    item.write_text(item.read_text().replace("\t1993\t", "\tV\t", 1))
    convert("recbole", tmp_path / "raw", tmp_path / "out", opts=OPTS)
    meta, stats = _checked(tmp_path / "out")
    year = stats["features"]["year"]
    assert year["not_numbers_read_as_missing"] >= 1 and year["missing_written_as"] == year["mean"]


@pytest.mark.parametrize("layout", ["1m", "100k", "20m"])
def test_movielens_features(layout: str, tmp_path: Path) -> None:
    write_movielens(tmp_path / "raw", layout, users=6)
    people = write_ml_users(tmp_path / "raw", layout) if layout != "20m" else {}
    stats = convert("movielens", tmp_path / "raw", tmp_path / "out", opts=OPTS)
    meta, _ = _checked(tmp_path / "out")
    names = [f["name"] for f in meta["features"]]
    if layout == "20m":
        assert names == ["genres", "year"] and "no users.dat or u.user" in stats["notes"][0]
    else:
        assert names == ["gender", "age", "occupation", "genres", "year"]
    rows = [r for s in ("train", "valid", "test") for r in read_rows(tmp_path / "out", s)]
    for r in rows:
        if layout != "20m":
            g, age, occ = people.get(r["user_id"], (None, None, None))
            occs = sorted({p[2] for p in people.values()})
            want = (0, 0, 0) if g is None else (
                1 + "FM".index(g), 1 + sum(b <= age for b in (18, 25, 35, 45, 50, 56)),
                1 + occs.index(occ))  # fmt: skip
            assert (r["feat_gender"], r["feat_age"], r["feat_occupation"]) == want
        years = [{"1m": 1999, "100k": 1995, "20m": 1995}[layout]] * len(r["tgt_item_id"])
        assert r["tgt_feat_year"] == years
    vocab = sorted({"Action", "Comedy", "Drama", "Sci-Fi", "Thriller"} | (
        {"War"} if layout == "100k" else {"Romance"}))  # fmt: skip
    r = rows[0]
    for m, ids in zip(r["tgt_item_id"], r["tgt_feat_genres"]):
        g = ["Action", "Comedy", "Drama", "Sci-Fi", "Thriller"][m % 5]
        other = "War" if layout == "100k" else "Romance"
        assert ids == sorted({1 + vocab.index(g), 1 + vocab.index(other)})


def test_kuairand_features(tmp_path: Path) -> None:
    write_kuairand(tmp_path / "raw", "pure", users=4)
    stats = convert("kuairand", tmp_path / "raw", tmp_path / "out", opts={"gap_s": 600})
    out = tmp_path / "out"
    meta, _ = _checked(out)
    decl = {f["name"]: f for f in meta["features"]}
    assert decl["hour"] == {"name": "hour", "side": "context", "kind": "id", "cardinality": 24}
    assert decl["user_active_degree"]["side"] == "user" and "onehot_feat17" in decl
    assert decl["tag"]["kind"] == "multi_hot" and decl["tag"]["cardinality"] == 6
    assert decl["video_duration"]["transform"] == "log1p_standardize"
    data = tmp_path / "raw" / "KuaiRand-Pure" / "data"
    users = {int(u["user_id"]): u for u in read_csv_rows([data / "user_features_pure.csv"])}
    videos = {
        int(v["video_id"]): v for v in read_csv_rows([data / "video_features_basic_pure.csv"])
    }
    onehot0 = sorted({u["onehot_feat0"] for u in users.values()})
    tags = sorted({t for v in videos.values() for t in v["tag"].split(",") if t})
    for s in SPLITS:
        for r in read_rows(out, s):
            hour = (r["request_ts"] + 8 * 3600) // 3600 % 24
            assert r["feat_hour"] == hour and r["feat_user_active_degree"] == 1
            assert r["feat_onehot_feat0"] == 1 + onehot0.index(users[r["user_id"]]["onehot_feat0"])
            for i, m in enumerate(r["tgt_item_id"]):
                v = videos[m]
                assert r["tgt_feat_video_duration"][i] == float(v["video_duration"])
                want = sorted(1 + tags.index(t) for t in v["tag"].split(",") if t) or [0]
                assert r["tgt_feat_tag"][i] == want
    durations = [float(videos[m]["video_duration"]) for r in read_rows(out, "train")
                 for m in r["tgt_item_id"]]  # fmt: skip
    assert decl["video_duration"]["mean"] == pytest.approx(np.mean(np.log1p(durations)))
    assert stats["features"]["video_duration"]["std"] == pytest.approx(np.std(np.log1p(durations)))


def test_kuairand_without_side_files_and_bad_values(tmp_path: Path) -> None:
    write_kuairand(tmp_path / "raw", "pure", users=3)
    data = tmp_path / "raw" / "KuaiRand-Pure" / "data"
    (data / "user_features_pure.csv").unlink()
    basic = data / "video_features_basic_pure.csv"
    text = basic.read_text()
    basic.unlink()
    stats = convert("kuairand", tmp_path / "raw", tmp_path / "out")
    meta, _ = _checked(tmp_path / "out")
    assert [f["name"] for f in meta["features"]] == ["hour"]
    assert any("no user_features_*.csv, so no user features" in n for n in stats["notes"])
    lines = text.splitlines()
    lines[3] = lines[3].replace(",90", ",abc", 1)  # video_duration 9002 -> abc02
    basic.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"video_features_basic_pure.csv: line 4, field "
                                         r"'video_duration': 'abc02' is not a number"):  # fmt: skip
        convert("kuairand", tmp_path / "raw", tmp_path / "out")
    basic.write_text(text.replace("music_id", "music"))
    with pytest.raises(ValueError, match=r"line 1 \(header\): missing column\(s\) \['music_id'\]"):
        convert("kuairand", tmp_path / "raw", tmp_path / "out")
