"""Which requests a bucket writes to which split (pass 2), and the train requests alone (the
side features' statistics, `feature_pass`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from longseq.datasets.convert.base import Converter
from longseq.datasets.convert.config import SPLITS
from longseq.datasets.convert.hashing import hash_uniform
from longseq.datasets.convert.partition import read_bucket
from longseq.datasets.convert.requests import Events, Requests, TargetSet, group, ranges

_SAMPLE_SALT = 0x5A3D


def assign_splits(
    kind: int, ts: np.ndarray, cut: dict[str, int], random_start: int | None
) -> np.ndarray:
    """Split index (into ``SPLITS``) per request, -1 = not written."""
    if kind == 1:
        if random_start is None:
            return np.full(ts.size, -1)
        return np.where(ts >= random_start, SPLITS.index("test_random"), -1)
    s = np.full(ts.size, -1)
    s[(ts >= cut["train_start"]) & (ts < cut["valid_start"])] = 0
    s[(ts >= cut["valid_start"]) & (ts < cut["test_start"])] = 1
    s[ts >= cut["test_start"]] = 2
    return s


def select_requests(
    conv: Converter, ev: Events, kind: int, cut: dict[str, int], random_start: int | None
) -> tuple[Requests, TargetSet, np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]] | None:
    """A bucket's requests of ``kind``, their targets (``[t_start, t_end)`` into ``tg``) and the
    requests written to each split (sampled, with a target), or None when there are none."""
    opts = conv.opts
    reqs = group(ev.subset(ev.kind == kind), opts, kind)
    if len(reqs) == 0:
        return None
    tg = conv.targets(reqs)
    t_start = np.searchsorted(tg.req, np.arange(len(reqs)), side="left")
    t_end = np.searchsorted(tg.req, np.arange(len(reqs)), side="right")
    split = assign_splits(kind, reqs.ts, cut, random_start)
    u = hash_uniform(conv.cfg.seed, _SAMPLE_SALT, reqs.key)
    sels = []
    for si, name in enumerate(SPLITS):
        rate = getattr(opts.sample, name)
        sel = np.flatnonzero((split == si) & (u < rate) & (t_end > t_start))
        if sel.size:
            sels.append((name, sel))
    return reqs, tg, t_start, t_end, sels


def train_chunks(
    conv: Converter,
    buckets: list[Path],
    item_vocab: np.ndarray,
    cat_vocab: np.ndarray,
    cut: dict[str, int],
    random_start: int | None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(users, request_ts, raw target items)`` of the train requests, bucket by bucket."""
    for path in buckets:
        ev = Events.from_table(read_bucket(path), item_vocab, cat_vocab)
        found = select_requests(conv, ev, 0, cut, random_start)
        for name, sel in found[4] if found is not None else []:
            if name == "train":
                reqs, tg, t_start, t_end, _ = found
                idx, _ = ranges(t_start[sel], t_end[sel])
                yield reqs.user[sel], reqs.ts[sel], item_vocab[tg.item[idx]]
