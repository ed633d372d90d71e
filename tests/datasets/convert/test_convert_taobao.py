"""Taobao UserBehavior converter on a header-less fixture: daily requests, observed targets as
documented, popularity-sampled negatives marked ``tgt_is_sampled``, no future in histories."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from convert_ref import convert, group_rule, history_rule, read_rows, split_of
from raw_fixtures import write_taobao

from longseq.datasets.validate import validate_path

BEH = ["pv", "buy", "cart", "fav"]
MAXT, MAXH = 12, 30
ORIGIN, DAY = 1511539200, 86400


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("taobao")
    rows = write_taobao(root / "raw")
    stats = convert(
        "taobao", root / "raw", root / "out", bucket_mb=0.005,
        opts={"max_targets": MAXT, "max_hist_len": MAXH, "neg_ratio": 2.0},
    )  # fmt: skip
    return rows, root / "out", stats


def _events(rows: list[tuple]) -> dict[int, list[dict]]:
    """In-range behaviors per user, in time then file order."""
    by_user: dict[int, list[dict]] = defaultdict(list)
    for seq, (u, item, cat, beh, ts) in enumerate(rows):
        if ORIGIN <= ts < ORIGIN + 9 * DAY:
            by_user[u].append({"ts": ts, "seq": seq, "item": item, "cat": cat, "beh": beh})
    for evs in by_user.values():
        evs.sort(key=lambda e: (e["ts"], e["seq"]))
    return by_user


def test_valid_meta_and_dropped_rows(converted) -> None:
    rows, out, stats = converted
    assert validate_path(out).ok  # tgt_is_sampled is an int8 0/1 list: accepted
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tasks"] == ["click", "buy"] and meta["num_actions"] == 4
    assert "tgt_is_sampled" in meta["extra_columns"]
    outside = sum(not ORIGIN <= r[4] < ORIGIN + 9 * DAY for r in rows)
    assert outside >= 2  # the fixture's two outliers at least
    assert stats["input"]["dropped"] == {"timestamp outside [ts_min, ts_max)": outside}
    assert stats["input"]["rows"] == len(rows)
    # default split: 2017-12-02 valid, 2017-12-03 test (Beijing days)
    assert stats["cutoffs"]["test_start"] == int(
        dt.datetime(2017, 12, 3, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()
    )
    assert all(stats["splits"][s]["requests"] > 0 for s in ("train", "valid", "test"))


def test_observed_targets_and_histories_as_documented(converted) -> None:
    rows, out, stats = converted
    by_user = _events(rows)
    ref = defaultdict(list)
    for u, evs in by_user.items():
        for req in group_rule(evs, 0, MAXT, window=(DAY, ORIGIN)):
            ts = req[0]["ts"]
            split = split_of(ts, stats["cutoffs"])
            items: dict[int, list[int]] = {}
            for e in req:  # distinct items, first-occurrence order, labels OR-ed
                lab = items.setdefault(e["item"], [1, 0])
                lab[1] |= e["beh"] == "buy"
            hist = history_rule(evs, ts, MAXH)
            ref[split].append((u, ts, tuple(items), tuple(tuple(v) for v in items.values()),
                               tuple(e["item"] for e in hist), tuple(BEH.index(e["beh"]) for e in hist)))  # fmt: skip
    for split in ("train", "valid", "test"):
        got = []
        for r in read_rows(out, split):
            obs = [i for i, s in enumerate(r["tgt_is_sampled"]) if not s]
            got.append((r["user_id"], r["request_ts"], tuple(r["tgt_item_id"][i] for i in obs),
                        tuple((r["tgt_click"][i], r["tgt_buy"][i]) for i in obs),
                        tuple(r["hist_item_id"]), tuple(r["hist_action"])))  # fmt: skip
            assert all(t < r["request_ts"] for t in r["hist_ts"])
        assert sorted(got) == sorted(ref[split]), split


def test_negatives_sampled_by_training_popularity(converted) -> None:
    rows, out, stats = converted
    valid_start = stats["cutoffs"]["valid_start"]
    pop: dict[int, int] = defaultdict(int)
    cat_of = {}
    for _u, item, cat, _beh, ts in rows:
        cat_of[item] = cat
        if ORIGIN <= ts < valid_start:
            pop[item] += 1
    negs: dict[int, int] = defaultdict(int)
    for split in ("train", "valid", "test"):
        for r in read_rows(out, split):
            pos = {i for i, s in zip(r["tgt_item_id"], r["tgt_is_sampled"]) if not s}
            neg = [i for i, s in zip(r["tgt_item_id"], r["tgt_is_sampled"]) if s]
            assert len(neg) == len(set(neg)) and not set(neg) & pos
            assert len(neg) <= 2 * len(pos)
            for k, (i, s) in enumerate(zip(r["tgt_item_id"], r["tgt_is_sampled"])):
                if s:
                    assert r["tgt_click"][k] == 0 and r["tgt_buy"][k] == 0
                    assert pop[i] > 0 and r["tgt_category_id"][k] == cat_of[i]
                    negs[i] += 1
    items = sorted(pop)
    corr = np.corrcoef([pop[i] for i in items], [negs[i] for i in items])[0, 1]
    assert corr > 0.5, corr  # drawn in proportion to training popularity
    assert stats["splits"]["train"]["label_rates"]["is_sampled"] > 0.3


def test_seed_changes_only_the_negatives(converted, tmp_path: Path) -> None:
    rows, out, _ = converted
    convert("taobao", out.parent / "raw", tmp_path / "o2", seed=1, bucket_mb=0.005,
            opts={"max_targets": MAXT, "max_hist_len": MAXH, "neg_ratio": 2.0})  # fmt: skip
    a, b = read_rows(out, "train"), read_rows(tmp_path / "o2", "train")

    def observed(rs):
        return [
            (r["request_ts"], [i for i, s in zip(r["tgt_item_id"], r["tgt_is_sampled"]) if not s])
            for r in rs
        ]

    assert observed(a) == observed(b)
    assert [r["tgt_item_id"] for r in a] != [r["tgt_item_id"] for r in b]
