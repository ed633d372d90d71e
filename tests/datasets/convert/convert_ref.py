"""Test helpers: run a conversion, read its output back with raw ids, and an independent
reference of the documented request rules (plain Python over the raw rows)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from longseq.datasets.convert import run_conversion
from longseq.datasets.convert.config import ConvertConfig


def convert(dataset: str, src: Path, out: Path, **over) -> dict:
    """Run a conversion; ``over`` sets top-level fields or ``opts=dict`` for the data set's
    section (``split``/``sample`` as dicts)."""
    cfg = ConvertConfig(dataset=dataset, src=str(src), out=str(out), progress=False)
    opts = over.pop("opts", {})
    for k, v in over.items():
        setattr(cfg, k, v)
    sec = cfg.options()
    for k, v in opts.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                setattr(getattr(sec, k), kk, vv)
        else:
            setattr(sec, k, v)
    return run_conversion(cfg)


def read_rows(out: Path, split: str) -> list[dict]:
    """Rows of a split with raw item/category ids (via ``vocab/``)."""
    items = np.load(out / "vocab" / "items.npy")
    cats = np.load(out / "vocab" / "categories.npy")
    rows = []
    for f in sorted((out / split).glob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            for k in ("hist_item_id", "tgt_item_id"):
                r[k] = [int(items[i]) for i in r[k]]
            for k in ("hist_category_id", "tgt_category_id"):
                r[k] = [int(cats[i]) for i in r[k]]
            rows.append(r)
    return rows


def read_csv_rows(paths: list[Path]) -> list[dict]:
    """Rows of header CSV files in reading order, with their global row number ``seq``."""
    out = []
    for p in paths:
        with open(p, newline="") as f:
            for r in csv.DictReader(f):
                r["seq"] = len(out)
                out.append(r)
    return out


def group_rule(events: list[dict], gap_s: int, max_targets: int, window=None) -> list[list[dict]]:
    """The documented grouping over one user's target events sorted by time: a new request on a
    gap > gap_s (or a new window), and after max_targets events."""
    reqs: list[list[dict]] = []
    for e in events:
        if reqs:
            prev = reqs[-1][-1]
            if window is not None:
                same = (e["ts"] - window[1]) // window[0] == (prev["ts"] - window[1]) // window[0]
            else:
                same = e["ts"] - prev["ts"] <= gap_s
            if same and len(reqs[-1]) < max_targets:
                reqs[-1].append(e)
                continue
        reqs.append([e])
    return reqs


def history_rule(events: list[dict], request_ts: int, max_len: int) -> list[dict]:
    """The user's events (sorted) strictly before ``request_ts`` seconds, the most recent
    ``max_len``."""
    h = [e for e in events if e["ts"] < request_ts]
    return h[-max_len:] if max_len else h


def split_of(ts: int, cut: dict) -> str | None:
    if ts < cut["train_start"]:
        return None
    if ts < cut["valid_start"]:
        return "train"
    return "valid" if ts < cut["test_start"] else "test"
