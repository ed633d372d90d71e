"""MovieLens converter on the three published layouts (ml-1m ``::``, ml-100k tab, ml-20m/32m
CSV with header): rating sessions, binarised labels, genres as categories."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from convert_ref import convert, group_rule, history_rule, read_rows, split_of
from raw_fixtures import ML_GENRES, write_movielens

from longseq.datasets.validate import validate_path

GAP, MAXT = 1800, 8


def _reference(rows: list[tuple], cut: dict, threshold: float) -> dict[str, list]:
    by_user = defaultdict(list)
    for seq, (u, m, r, t) in enumerate(rows):
        by_user[u].append({"ts": t, "seq": seq, "item": m, "rating": r})
    out = defaultdict(list)
    for u, evs in by_user.items():
        evs.sort(key=lambda e: (e["ts"], e["seq"]))
        for req in group_rule(evs, GAP, MAXT):
            split = split_of(req[0]["ts"], cut)
            hist = history_rule(evs, req[0]["ts"], 0)
            out[split].append((u, req[0]["ts"], tuple(e["item"] for e in req),
                               tuple(int(e["rating"] >= threshold) for e in req),
                               tuple(e["item"] for e in hist), tuple(round(2 * e["rating"]) for e in hist)))  # fmt: skip
    return out


@pytest.mark.parametrize("layout", ["1m", "100k", "20m"])
def test_layout_converts_as_documented(layout: str, tmp_path: Path) -> None:
    rows = write_movielens(tmp_path / "raw", layout)
    thr = 3.5 if layout == "20m" else 4.0
    stats = convert("movielens", tmp_path / "raw", tmp_path / "out", bucket_mb=0.002,
                    opts={"gap_s": GAP, "max_targets": MAXT, "max_hist_len": 0, "threshold": thr})  # fmt: skip
    out = tmp_path / "out"
    assert validate_path(out).ok
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tasks"] == ["like"] and meta["num_actions"] == 11
    assert meta["num_categories"] == len(ML_GENRES)  # first genre of each movie
    ref = _reference(rows, stats["cutoffs"], thr)
    for split in ("train", "valid", "test"):
        got = [(r["user_id"], r["request_ts"], tuple(r["tgt_item_id"]), tuple(r["tgt_like"]),
                tuple(r["hist_item_id"]), tuple(r["hist_action"])) for r in read_rows(out, split)]  # fmt: skip
        assert sorted(got) == sorted(ref[split]), split
        assert got, split  # the fraction-based split gives every split requests
    # categories: the genre names sorted, the movie's first genre
    genres = sorted(ML_GENRES)
    r = read_rows(out, "train")[0]
    assert [genres[c] for c in r["tgt_category_id"]] == [ML_GENRES[m % 5] for m in r["tgt_item_id"]]
