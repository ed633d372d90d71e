"""The shared out-of-core pipeline: raw CSV -> user buckets (pass 1) -> requests (pass 2).

Memory is bounded by one CSV block (pass 1) and one bucket plus one history chunk (pass 2):
``bucket_mb`` of raw input per bucket, ``hist_chunk_events`` history events gathered at a
time. Output is deterministic: events are ordered by (user, time, sub-second time, input row),
buckets are processed in order, sampling is a hash of the request's first input row.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from longseq.data.format import REQUEST_SCHEMA
from longseq.data.manifest import MANIFEST_NAME
from longseq.data.meta import FORMAT, DatasetMeta
from longseq.data.writer import SplitWriter
from longseq.datasets.convert.base import Context, Converter
from longseq.datasets.convert.config import SPLITS, ConvertConfig, SplitConfig
from longseq.datasets.convert.csvsource import iter_blocks
from longseq.datasets.convert.feature_pass import feature_columns, feature_fields, train_stats
from longseq.datasets.convert.partition import Partitioner, event_schema, num_buckets, read_bucket
from longseq.datasets.convert.registry import dataset_names
from longseq.datasets.convert.requests import Events, history_bounds, ranges, request_table
from longseq.datasets.convert.selection import assign_splits, select_requests, train_chunks
from longseq.datasets.convert.stats import SplitStats

__all__ = ["assign_splits", "convert", "output_schema", "resolve_cutoffs"]


def output_schema(conv: Converter) -> pa.Schema:
    """The request-level schema with this data set's label and extra columns."""
    core = [f for f in REQUEST_SCHEMA if f.name not in ("tgt_click", "tgt_p_true")]
    labels = [pa.field(f"tgt_{t}", pa.list_(pa.int8())) for t in conv.tasks]
    extra = [pa.field(f"tgt_{e}", pa.list_(pa.int8())) for e in conv.extra_columns]
    return pa.schema([*core, *labels, *extra, *feature_fields(conv.side_features)])


def resolve_cutoffs(split: SplitConfig, hours: np.ndarray, counts: np.ndarray) -> dict[str, int]:
    """``train_start``/``valid_start``/``test_start`` in Unix seconds (explicit, or derived from
    the fractions over the hourly histogram of target events)."""
    cdf = np.cumsum(counts)

    def at(frac_before: float) -> int:
        if cdf.size == 0:
            return 0
        i = int(np.searchsorted(cdf, frac_before * cdf[-1], side="left"))
        return int(hours[min(i + 1, hours.size - 1)] * 3600)

    test = split.test_start or at(1.0 - split.test_fraction)
    valid = split.valid_start or (
        at(1.0 - split.test_fraction - split.valid_fraction) if split.valid_fraction else test
    )
    out = {"train_start": int(split.train_start), "valid_start": int(valid), "test_start": test}
    if not out["train_start"] <= out["valid_start"] <= out["test_start"]:
        raise ValueError(
            f"convert config: split needs train_start <= valid_start <= test_start, got {out}"
        )
    return out


class _Progress:
    def __init__(self, enabled: bool, **kw: Any) -> None:
        from tqdm import tqdm

        self.bar = tqdm(file=sys.stderr, disable=not enabled, **kw)

    def __enter__(self):
        return self.bar

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def convert(cfg: ConvertConfig, conv: Converter) -> dict[str, Any]:
    """Run the conversion ``cfg`` with the data set's converter ``conv``; return the stats.
    ``cfg`` was validated by the entry point (`longseq.datasets.convert.run_conversion`)."""
    t0 = time.perf_counter()
    src, out = Path(cfg.src), Path(cfg.out)
    specs = conv.inputs(src)
    conv.prepare(src)
    opts = conv.opts
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:  # parts of an earlier run would mix with this one
        for stale in (out / split).glob("part-*.parquet"):
            stale.unlink()
        (out / split / MANIFEST_NAME).unlink(missing_ok=True)  # SplitWriter writes a new one
    tmp = Path(cfg.tmp) if cfg.tmp else out / "_buckets"
    if tmp.exists():
        shutil.rmtree(tmp)
    input_bytes = sum(s.path.stat().st_size for s in specs)
    n = num_buckets(input_bytes, cfg.bucket_mb)
    part = Partitioner(tmp, n, event_schema(conv.label_names))

    # pass 1: stream every raw file into user buckets
    seq = 0
    with _Progress(
        cfg.progress, total=input_bytes, unit="B", unit_scale=True, desc="pass 1/2 read"
    ) as bar:
        for spec in specs:
            for batch, line in iter_blocks(spec, int(cfg.block_mb * 2**20), bar.update):
                part.add(conv.normalize(batch, spec, line, seq))
                seq += batch.num_rows
    buckets = part.close()
    item_vocab, cat_vocab = part.items.values(), part.cats.values()
    if part.rows == 0:
        raise ValueError(f"{src}: no events read from {[str(s.path) for s in specs]}")
    cut = resolve_cutoffs(opts.split, *part.hours.items())
    ctx = Context(buckets, item_vocab, cat_vocab, cut)
    conv.after_pass1(ctx)
    random_start = _random_start(conv, cut)

    # pass 2: one bucket at a time -> requests -> split writers
    schema = output_schema(conv)
    kinds_splits = ["train", "valid", "test"] + (
        ["test_random"] if random_start is not None else []
    )
    writers = {
        s: SplitWriter(out / s, schema, cfg.rows_per_file, cfg.row_group_size, cfg.compression)
        for s in kinds_splits
    }
    stats = {s: SplitStats() for s in kinds_splits}
    next_id = 0
    hist_max = 0
    feats = conv.side_features
    feature_stats = train_stats(
        feats, train_chunks(conv, buckets, item_vocab, cat_vocab, cut, random_start)
    ) if feats else {}  # fmt: skip
    with _Progress(
        cfg.progress, total=len(buckets), unit="bucket", desc="pass 2/2 requests"
    ) as bar:
        for path in buckets:
            ev = Events.from_table(read_bucket(path), item_vocab, cat_vocab)
            hist = ev.subset(conv.history_mask(ev))
            for kind in conv.request_kinds:
                found = select_requests(conv, ev, kind, cut, random_start)
                if found is None:
                    continue
                reqs, tg, t_start, t_end, sels = found
                r_user, r_ts = reqs.user, reqs.ts
                tg_raw = item_vocab[tg.item] if feats else tg.item
                for name, sel in sels:
                    h_start, h_end = history_bounds(hist, r_user[sel], r_ts[sel], opts.max_hist_len)
                    hist_max = max(hist_max, int((h_end - h_start).max()))
                    _add_stats(
                        stats[name], tg, r_user[sel], t_start[sel], t_end[sel], h_end - h_start
                    )
                    ids = np.arange(next_id, next_id + sel.size, dtype=np.int64)
                    next_id += sel.size
                    for a, b in _chunks(h_end - h_start, cfg.hist_chunk_events):
                        s = sel[a:b]
                        extra = feature_columns(
                            feats, r_user[s], r_ts[s], tg_raw, t_start[s], t_end[s]
                        )
                        writers[name].add(
                            request_table(
                                schema, ids[a:b], r_user[s], r_ts[s], hist, h_start[a:b],
                                h_end[a:b], tg, t_start[s], t_end[s], extra,
                            )
                        )  # fmt: skip
            bar.update(1)
    files = {s: w.close() for s, w in writers.items()}
    if not cfg.keep_tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = _meta(
        cfg, conv, specs, item_vocab, cat_vocab, cut, random_start, stats, files, hist_max, out
    )
    _write_vocab(out, item_vocab, cat_vocab)
    meta.write(out)
    result = {
        "dataset": cfg.dataset,
        "variant": conv.variant,
        "input": {"files": [s.path.name for s in specs], "bytes": input_bytes, "rows": seq, "events": part.rows,
                  "dropped": dict(sorted(conv.dropped.items())), "buckets": n},
        "items": int(item_vocab.size),
        "categories": int(cat_vocab.size),
        "cutoffs": cut,
        "splits": {s: st.to_dict() for s, st in stats.items()},
        **({"features": feature_stats} if feats else {}),
        **({"notes": list(conv.notes)} if conv.notes else {}),
        "run": {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mb": _peak_rss_mb()},
    }  # fmt: skip
    (out / "stats.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _random_start(conv: Converter, cut: dict[str, int]) -> int | None:
    if 1 not in conv.request_kinds:
        return None
    frm = getattr(conv.opts, "random_from", "none")
    return {"test": cut["test_start"], "valid": cut["valid_start"], "all": -(2**62)}.get(frm)


def _chunks(hlen: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive ``[a, b)`` request ranges of at most ``budget`` history events (>= 1 row)."""
    out, a, n = [], 0, hlen.size
    csum = np.concatenate(([0], np.cumsum(hlen)))
    while a < n:
        b = int(np.searchsorted(csum, csum[a] + budget, side="right")) - 1
        b = min(max(b, a + 1), n)
        out.append((a, b))
        a = b
    return out


def _add_stats(st: SplitStats, tg, users, t_start, t_end, hlen) -> None:
    idx, _ = ranges(t_start, t_end)
    sums = {k: int(v[idx].sum()) for k, v in {**tg.labels, **tg.extra}.items()}
    st.add(users, t_end - t_start, hlen, sums)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _meta(cfg, conv, specs, item_vocab, cat_vocab, cut, random_start, stats, files, hist_max, out):
    opts = conv.opts
    cfg_dict = asdict(cfg)
    for other in dataset_names():
        if other != cfg.dataset:
            cfg_dict.pop(other)
    return DatasetMeta(
        format=FORMAT,
        tasks=tuple(conv.tasks),
        num_items=int(item_vocab.size),
        num_categories=int(cat_vocab.size),
        num_actions=int(conv.num_actions),
        targets_per_request=int(max((s.tpr.size - 1 for s in stats.values()), default=0)),
        hist_len_max=int(opts.max_hist_len or hist_max),
        num_requests={s: int(st.requests) for s, st in stats.items()},
        features=tuple(f.spec for f in _declared(conv.side_features)),
        files={s: tuple(str(p.relative_to(out)) for p in fs) for s, fs in files.items()},
        extra={
            "dataset": cfg.dataset,
            "variant": conv.variant,
            "source_files": [s.path.name for s in specs],
            "extra_columns": {f"tgt_{k}": v for k, v in conv.extra_columns.items()},
            "split_cutoffs": cut,
            "test_cutoff_ts": cut["test_start"],
            "test_random_start": random_start if random_start is None or random_start > 0 else 0,
            "vocab": {"items": "vocab/items.npy", "categories": "vocab/categories.npy"},
            "config": cfg_dict,
        },
    )


def _declared(feats: list) -> list:
    """Request-level features first, then candidate ones (the schema's order)."""
    return [f for f in feats if f.spec.per_request] + [f for f in feats if not f.spec.per_request]


def _write_vocab(out: Path, items: np.ndarray, cats: np.ndarray) -> None:
    """``vocab/items.npy``: the raw id of each dense item id (its index); same for categories.
    (Not Parquet: every ``.parquet`` under a data set is read as requests.)"""
    (out / "vocab").mkdir(exist_ok=True)
    np.save(out / "vocab" / "items.npy", items)
    np.save(out / "vocab" / "categories.npy", cats)
