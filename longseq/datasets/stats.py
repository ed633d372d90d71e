"""Statistics of a request-level data set, per split, streamed one row group at a time.

    python -m longseq.datasets.stats path=<data set or split folder> [out=<file.json>]

Per split: requests, targets, distinct users, targets per request (mean/min/max), history length
(mean and nearest-rank percentiles p0/p50/p90/p99/max), the label rate of each task, bytes on disk
per request and per target, and an **estimate** of the bytes per target of the pointwise layout
(one row per target, history repeated): the compressed bytes of the history and request-level
columns repeated once per target (each request's share of its row group's history bytes taken in
proportion to its history length), plus the target columns and file overhead once. Real pointwise
files compress repeated histories differently, so this is an estimate, not a measurement.

Memory: one row group at a time, a histogram of history lengths (one counter per length) and the
sorted distinct user ids (8 bytes per user, needed for an exact count).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from omegaconf import MISSING

from longseq.data.format import HIST_COLUMNS, dataset_files, task_names

PERCENTILES: tuple[int, ...] = (0, 50, 90, 99)
POINTWISE_NOTE = (
    "estimate: compressed history and request-level column bytes repeated per target, target "
    "columns and file overhead once; not measured on pointwise files"
)
PERCENTILE_NOTE = "nearest rank (numpy method='inverted_cdf')"


@dataclass
class StatsConfig:
    """Config of ``python -m longseq.datasets.stats`` (registered as ``stats_schema``).

    Attributes:
        path: a data set folder (one sub-folder per split) or one split folder.
        out: also write the statistics as JSON to this file (empty: don't).
        progress: tqdm bar over row groups on stderr.
    """

    path: str = MISSING
    out: str = ""
    progress: bool = True


def find_splits(path: str | Path) -> dict[str, list[Path]]:
    """``{split name: Parquet files}``: ``path`` itself if it holds Parquet files (or is one),
    else each sub-folder that does (train first, then by name)."""
    p = Path(path)
    if p.is_file() or any(p.glob("*.parquet")):
        return {p.stem if p.is_file() else p.name: dataset_files(p)}
    subs = (
        [d for d in p.iterdir() if d.is_dir() and any(d.rglob("*.parquet"))] if p.is_dir() else []
    )
    if not subs:
        raise ValueError(f"{p}: no .parquet files (expected a data set or split folder)")
    return {
        d.name: dataset_files(d) for d in sorted(subs, key=lambda d: (d.name != "train", d.name))
    }


def _percentiles(counts: np.ndarray) -> dict[str, int | None]:
    """Nearest-rank percentiles of the values whose histogram is ``counts``."""
    n = int(counts.sum())
    if n == 0:
        return {**{f"p{q}": None for q in PERCENTILES}, "max": None}
    cum = np.cumsum(counts)
    out: dict[str, int | None] = {}
    for q in PERCENTILES:
        k = max(math.ceil(q * n / 100), 1)
        out[f"p{q}"] = int(np.searchsorted(cum, k))
    out["max"] = int(np.flatnonzero(counts)[-1])
    return out


class SplitStats:
    """Streaming accumulator of one split's statistics."""

    def __init__(self) -> None:
        self.files = self.row_groups = self.requests = self.targets = self.events = 0
        self.bytes = 0
        self.pointwise_extra = 0.0  # bytes the repeated columns add in the pointwise layout
        self.tpr_min, self.tpr_max = math.inf, -math.inf
        self.len_counts = np.zeros(0, np.int64)
        self.positives: dict[str, int] = {}
        self._users = np.zeros(0, np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def _merge_users(self) -> None:
        self._users = np.unique(np.concatenate([self._users, *self._pending]))
        self._pending, self._pending_n = [], 0

    def add_file(self, path: Path, bar: Any = None) -> None:
        """Accumulate every row group of one Parquet file."""
        pf = pq.ParquetFile(path)
        self.files += 1
        self.bytes += path.stat().st_size
        tasks = task_names(pf.schema_arrow)
        hist_col = next(c for c in HIST_COLUMNS if c in pf.schema_arrow.names)
        cols = ["user_id", hist_col, "tgt_item_id", *(f"tgt_{t}" for t in tasks)]
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=cols)
            n = t.num_rows
            lens = pc.list_value_length(t.column(hist_col)).fill_null(0).to_numpy(False)
            tpr = pc.list_value_length(t.column("tgt_item_id")).fill_null(0).to_numpy(False)
            self.row_groups += 1
            self.requests += n
            self.targets += int(tpr.sum())
            self.events += int(lens.sum())
            if n:
                self.tpr_min = min(self.tpr_min, int(tpr.min()))
                self.tpr_max = max(self.tpr_max, int(tpr.max()))
                c = np.bincount(lens.astype(np.int64))
                if c.size > self.len_counts.size:
                    self.len_counts = np.pad(self.len_counts, (0, c.size - self.len_counts.size))
                self.len_counts[: c.size] += c
            for task in tasks:
                pos = pc.sum(pc.list_flatten(t.column(f"tgt_{task}"))).as_py() or 0
                self.positives[task] = self.positives.get(task, 0) + int(pos)
            self._pending.append(np.unique(t.column("user_id").to_numpy()))
            self._pending_n += self._pending[-1].size
            if self._pending_n > 1_000_000:
                self._merge_users()
            self.pointwise_extra += _pointwise_extra(pf.metadata.row_group(g), lens, tpr)
            if bar is not None:
                bar.update(1)

    def result(self) -> dict[str, Any]:
        """The statistics as a JSON-ready dict."""
        self._merge_users()
        R, T = self.requests, self.targets
        pw = self.bytes + self.pointwise_extra
        return {
            "files": self.files,
            "row_groups": self.row_groups,
            "requests": R,
            "targets": T,
            "users": int(self._users.size),
            "targets_per_request": {
                "mean": T / R if R else None,
                "min": self.tpr_min if R else None,
                "max": self.tpr_max if R else None,
            },
            "hist_len": {"mean": self.events / R if R else None, **_percentiles(self.len_counts)},
            "label_rate": {k: (v / T if T else None) for k, v in self.positives.items()},
            "bytes_on_disk": self.bytes,
            "bytes_per_request": self.bytes / R if R else None,
            "bytes_per_target": self.bytes / T if T else None,
            "pointwise_bytes_per_target_estimate": pw / T if T else None,
            "pointwise_over_request_level_estimate": pw / self.bytes if self.bytes else None,
        }


def _pointwise_extra(rg: Any, lens: np.ndarray, tpr: np.ndarray) -> float:
    """Bytes the pointwise layout adds over the request-level one for a row group (estimate)."""
    hist = req = 0
    for j in range(rg.num_columns):
        col = rg.column(j)
        top = col.path_in_schema.split(".")[0]
        if top.startswith("hist_"):
            hist += col.total_compressed_size
        elif not top.startswith("tgt_"):
            req += col.total_compressed_size
    n, L = lens.size, lens.astype(np.float64)
    if n == 0:
        return 0.0
    hist_pw = hist * float((L * tpr).sum() / L.sum()) if L.sum() > 0 else 0.0
    req_pw = req * float(tpr.sum()) / n
    return hist_pw + req_pw - hist - req


def dataset_stats(path: str | Path, progress: bool = False) -> dict[str, Any]:
    """Statistics of every split under ``path`` (see the module docstring)."""
    from tqdm import tqdm

    splits = find_splits(path)
    total = sum(pq.ParquetFile(f).metadata.num_row_groups for fs in splits.values() for f in fs)
    bar = tqdm(total=total, desc="stats", unit="row group", file=sys.stderr, disable=not progress)
    out: dict[str, Any] = {}
    for name, files in splits.items():
        acc = SplitStats()
        for f in files:
            acc.add_file(f, bar)
        out[name] = acc.result()
    bar.close()
    notes = {"hist_len": PERCENTILE_NOTE, "pointwise_bytes_per_target_estimate": POINTWISE_NOTE}
    return {"path": str(path), "splits": out, "notes": notes}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:,}"


def markdown(stats: dict[str, Any]) -> str:
    """The statistics as a Markdown table (one column per split) with its notes."""
    splits = stats["splits"]
    names = list(splits)
    tasks = list(dict.fromkeys(t for s in splits.values() for t in s["label_rate"]))
    rows: list[tuple[str, list[Any]]] = [
        (k, [splits[n][k] for n in names]) for k in ("requests", "targets", "users")
    ]
    for k in ("mean", "min", "max"):
        rows.append((f"targets/request {k}", [splits[n]["targets_per_request"][k] for n in names]))
    for k in ("mean", *(f"p{q}" for q in PERCENTILES), "max"):
        rows.append((f"history length {k}", [splits[n]["hist_len"][k] for n in names]))
    for t in tasks:
        rows.append((f"label rate {t}", [splits[n]["label_rate"].get(t) for n in names]))
    rows += [
        ("bytes on disk", [splits[n]["bytes_on_disk"] for n in names]),
        ("bytes / request", [splits[n]["bytes_per_request"] for n in names]),
        ("bytes / target", [splits[n]["bytes_per_target"] for n in names]),
        ("pointwise bytes / target (estimate)", [
            splits[n]["pointwise_bytes_per_target_estimate"] for n in names
        ]),
        ("pointwise / request-level (estimate)", [
            splits[n]["pointwise_over_request_level_estimate"] for n in names
        ]),
    ]  # fmt: skip
    lines = [f"Data set statistics: {stats['path']}", ""]
    lines += ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [
        "| " + label + " | " + " | ".join(_fmt(v) for v in vals) + " |" for label, vals in rows
    ]
    lines += [
        "",
        f"History length percentiles: {PERCENTILE_NOTE}.",
        f"Pointwise: {POINTWISE_NOTE}.",
    ]
    return "\n".join(lines)


def _main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import DictConfig, OmegaConf

    from longseq.config import CONFIG_DIR

    ConfigStore.instance().store(name="stats_schema", node=StatsConfig)

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="stats")
    def run(cfg: DictConfig) -> None:
        conf = OmegaConf.to_object(cfg)
        assert isinstance(conf, StatsConfig)
        try:
            stats = dataset_stats(conf.path, progress=conf.progress)
        except (ValueError, FileNotFoundError) as e:
            print(f"stats: {e}", file=sys.stderr)
            sys.exit(2)
        print(markdown(stats), flush=True)
        if conf.out:
            Path(conf.out).parent.mkdir(parents=True, exist_ok=True)
            Path(conf.out).write_text(json.dumps(stats, indent=2) + "\n")

    run()


if __name__ == "__main__":
    _main()
