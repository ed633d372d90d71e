"""KuaiRand converter on fixture files in the published layout: schema-valid output, requests,
histories and labels exactly as documented (checked against an independent reference), no
event at or after a request in its history, the random log as its own split."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from convert_ref import convert, group_rule, history_rule, read_csv_rows, read_rows, split_of
from raw_fixtures import KUAI_LOG_HEADER, write_kuairand

from longseq.datasets.convert.kuairand import KUAIRAND_ACTION_COLUMNS
from longseq.datasets.validate import validate_path

GAP, MAXT, MAXH = 600, 5, 40


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("kuairand")
    write_kuairand(root / "raw", "1k")
    stats = convert(
        "kuairand", root / "raw", root / "out", bucket_mb=0.01, block_mb=0.004,
        opts={"max_targets": MAXT, "max_hist_len": MAXH, "gap_s": GAP, "random_from": "valid"},
    )  # fmt: skip
    return root / "raw", root / "out", stats


def _reference(raw: Path, cut: dict) -> dict[str, list[tuple]]:
    data = raw / "KuaiRand-1K" / "data"
    std = read_csv_rows(sorted(data.glob("log_standard_*.csv")))
    rnd = read_csv_rows(sorted(data.glob("log_random_*.csv")))
    for r in rnd:
        r["seq"] += len(std)
    tags = {}
    for r in read_csv_rows([data / "video_features_basic_1k.csv"]):
        tags[int(r["video_id"])] = int(r["tag"].split(",")[0]) if r["tag"] else -1
    by_user: dict[int, list[dict]] = defaultdict(list)
    for kind, rows in ((0, std), (1, rnd)):
        for r in rows:
            action = sum(int(r[c]) << k for k, c in enumerate(KUAIRAND_ACTION_COLUMNS))
            ms = int(r["time_ms"])
            e = {"ts": ms // 1000, "ms": ms, "seq": r["seq"], "kind": kind, "action": action,
                 "item": int(r["video_id"]), "labels": (int(r["is_click"]), int(r["long_view"]), int(r["is_like"]))}  # fmt: skip
            by_user[int(r["user_id"])].append(e)
    out: dict[str, list[tuple]] = defaultdict(list)
    for user, evs in by_user.items():
        evs.sort(key=lambda e: (e["ms"], e["seq"]))
        for kind in (0, 1):
            for req in group_rule([e for e in evs if e["kind"] == kind], GAP, MAXT):
                ts = req[0]["ts"]
                split = (
                    split_of(ts, cut)
                    if kind == 0
                    else ("test_random" if ts >= cut["valid_start"] else None)
                )
                if split is None:
                    continue
                hist = history_rule(evs, ts, MAXH)
                out[split].append((
                    user, ts, tuple(e["item"] for e in req), tuple(tags[e["item"]] for e in req),
                    tuple(e["labels"] for e in req), tuple(e["item"] for e in hist),
                    tuple(e["action"] for e in hist), tuple(e["ts"] for e in hist),
                    tuple(tags[e["item"]] for e in hist),
                ))  # fmt: skip
    return out


def _as_tuples(rows: list[dict]) -> list[tuple]:
    return [
        (r["user_id"], r["request_ts"], tuple(r["tgt_item_id"]), tuple(r["tgt_category_id"]),
         tuple(zip(r["tgt_is_click"], r["tgt_long_view"], r["tgt_is_like"])),
         tuple(r["hist_item_id"]), tuple(r["hist_action"]), tuple(r["hist_ts"]),
         tuple(r["hist_category_id"]))
        for r in rows
    ]  # fmt: skip


def test_output_is_schema_valid_with_meta(converted) -> None:
    _, out, stats = converted
    rep = validate_path(out)
    assert rep.ok, rep.summary()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tasks"] == ["is_click", "long_view", "is_like"]
    assert meta["num_actions"] == 256 and meta["variant"] == "KuaiRand-1K"
    assert meta["num_categories"] == 5  # tags 2, 7, 12, 65 and "no tag"
    assert set(meta["num_requests"]) == {"train", "valid", "test", "test_random"}
    assert stats["input"]["buckets"] > 1  # out-of-core path with several buckets
    assert all(meta["num_requests"][s] > 0 for s in meta["num_requests"])
    for s, n in meta["num_requests"].items():
        assert stats["splits"][s]["requests"] == n == len(read_rows(out, s))


def test_requests_histories_labels_match_the_documented_rules(converted) -> None:
    raw, out, stats = converted
    ref = _reference(raw, stats["cutoffs"])
    for split in ("train", "valid", "test", "test_random"):
        got = _as_tuples(read_rows(out, split))
        assert sorted(got) == sorted(ref[split]), split


def test_no_event_at_or_after_the_request_in_any_history(converted) -> None:
    _, out, stats = converted
    cut = stats["cutoffs"]
    for split in ("train", "valid", "test", "test_random"):
        for r in read_rows(out, split):
            assert all(t < r["request_ts"] for t in r["hist_ts"])
            assert r["hist_ts"] == sorted(r["hist_ts"])
            assert len(r["hist_ts"]) <= MAXH and 1 <= len(r["tgt_item_id"]) <= MAXT
            if split == "train":
                assert cut["train_start"] <= r["request_ts"] < cut["valid_start"]
            elif split == "valid":
                assert cut["valid_start"] <= r["request_ts"] < cut["test_start"]
            elif split == "test":
                assert r["request_ts"] >= cut["test_start"]


def test_request_ids_unique_and_stats(converted) -> None:
    _, out, stats = converted
    ids = [
        r["request_id"]
        for s in ("train", "valid", "test", "test_random")
        for r in read_rows(out, s)
    ]
    assert len(ids) == len(set(ids))
    tr = stats["splits"]["train"]
    assert tr["history_length"]["p100"] <= MAXH and tr["targets_per_request"]["p100"] <= MAXT
    assert 0 < tr["label_rates"]["is_click"] < 1
    assert tr["users"] == len({r["user_id"] for r in read_rows(out, "train")})


def test_empty_time_ms_falls_back_to_date_and_hourmin(tmp_path: Path) -> None:
    data = tmp_path / "raw" / "KuaiRand-Pure" / "data"
    data.mkdir(parents=True)
    rows = [
        "7,100,20220506,1015,1651803300000,1,0,0,0,0,0,1,10,20,0,0,0,0,1",
        "7,101,20220506,1030,,0,0,0,0,0,0,0,10,20,0,0,0,0,1",  # 2022-05-06 10:30 Beijing
    ]
    (data / "log_standard_4_22_to_5_08_pure.csv").write_text(
        KUAI_LOG_HEADER + "\n" + "\n".join(rows) + "\n"
    )
    convert("kuairand", tmp_path / "raw", tmp_path / "out", opts={"random_from": "none"})
    test = read_rows(tmp_path / "out", "test")
    assert [r["request_ts"] for r in test] == [1651803300, 1651804200]
    assert test[1]["hist_ts"] == [1651803300] and test[1]["hist_action"] == [1 | 2]
