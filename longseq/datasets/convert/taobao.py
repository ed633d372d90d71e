"""Taobao UserBehavior -> request-level Parquet, with seeded popularity-proportional negatives.

Input (as published): ``UserBehavior.csv``, no header, ``user_id,item_id,category_id,
behavior_type,timestamp`` with ``behavior_type`` in pv/buy/cart/fav and Unix-second timestamps.
Rows outside ``[ts_min, ts_max)`` (default: 2017-11-25..2017-12-03, Beijing days) are dropped
and counted.

- requests: a user's behaviors in one clock window (``window_s``, default Beijing days), at most
  ``max_targets`` behaviors per request (a busier window continues as the next request);
- observed targets: the distinct items of the request (first-occurrence order); ``tgt_click``
  is 1, ``tgt_<b>`` (``label_behaviors``) is 1 if the user did ``b`` to the item in the request;
- sampled negatives: ``round(neg_ratio x observed)`` per request, drawn with replacement with
  probability proportional to the item's count of behaviors before ``valid_start`` (training
  period only: no future popularity), uniform numbers from a hash of (seed, the request's first
  input row, draw number); draws equal to an observed item of the request or to an earlier draw
  are dropped. All labels 0, ``tgt_is_sampled`` = 1 (0 for observed targets);
- history: every earlier behavior, ``hist_action`` = index of the behavior in ``behaviors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.datasets.convert.base import Context, Converter, find_files, seq_column
from longseq.datasets.convert.csvsource import CsvSpec, bad_row_error
from longseq.datasets.convert.hashing import hash_uniform
from longseq.datasets.convert.options import DatasetOptions, SplitConfig
from longseq.datasets.convert.partition import event_schema, read_bucket
from longseq.datasets.convert.requests import Requests, TargetSet

_NEG_SALT = 0x7A0B
_NAMES = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]


@dataclass
class TaobaoOptions(DatasetOptions):
    """Taobao UserBehavior. Defaults: daily requests (Beijing days), events outside
    2017-11-25..2017-12-03 dropped, valid 12-02, test 12-03.

    Attributes:
        behaviors: behavior strings in action-id order (``hist_action`` = index).
        label_behaviors: extra tasks ``tgt_<behavior>`` (1 if the user did it to the target in
            the request); ``tgt_click`` is 1 for every observed target and 0 for sampled ones.
        neg_ratio: sampled negatives per observed target (rounded per request).
        ts_min / ts_max: events outside ``[ts_min, ts_max)`` are dropped (0: no bound).
    """

    max_hist_len: int = 1000
    group: str = "window"
    window_s: int = 86400
    window_origin: int = 1511539200
    max_targets: int = 64
    split: SplitConfig = field(
        default_factory=lambda: SplitConfig(valid_start=1512144000, test_start=1512230400)
    )
    behaviors: list[str] = field(default_factory=lambda: ["pv", "buy", "cart", "fav"])
    label_behaviors: list[str] = field(default_factory=lambda: ["buy"])
    neg_ratio: float = 1.0
    ts_min: int = 1511539200
    ts_max: int = 1512316800

    def checks(self, prefix: str) -> list[tuple[str, bool, str]]:
        """The shared checks and ``neg_ratio``, ``label_behaviors``."""
        bad = [b for b in self.label_behaviors if b not in self.behaviors]
        return super().checks(prefix) + [
            (f"{prefix}.neg_ratio", self.neg_ratio >= 0, ">= 0"),
            (f"{prefix}.label_behaviors", not bad, f"a subset of {self.behaviors}"),
        ]


@dataclass
class TaobaoConverter(Converter):
    """See the module docstring."""

    _cdf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    _item_cat: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        o = self.opts
        assert isinstance(o, TaobaoOptions)
        self.tasks = ["click", *o.label_behaviors]
        self.num_actions = len(o.behaviors)
        self.variant = "UserBehavior"
        self.extra_columns = {
            "is_sampled": "1: a negative sampled by popularity (labels 0); 0: an observed target"
        }

    def inputs(self, src: Path) -> list[CsvSpec]:
        files = find_files(src, "UserBehavior*.csv")
        if not files:
            raise FileNotFoundError(f"src={src}: no UserBehavior.csv found")
        types = {"user_id": pa.int64(), "item_id": pa.int64(), "category_id": pa.int64()}
        types |= {"behavior_type": pa.string(), "timestamp": pa.int64()}
        return [CsvSpec(p, types, names=list(_NAMES)) for p in files]

    def normalize(
        self, batch: pa.RecordBatch, spec: CsvSpec, first_line: int, seq0: int
    ) -> pa.Table:
        o = self.opts
        assert isinstance(o, TaobaoOptions)
        for name in _NAMES:
            col = batch.column(name)
            if col.null_count:
                row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
                raise bad_row_error(spec, first_line, row, name, "empty value")
        beh = pc.index_in(batch.column("behavior_type"), value_set=pa.array(o.behaviors))
        if beh.null_count:
            row = int(np.flatnonzero(beh.is_null().to_numpy(zero_copy_only=False))[0])
            value = batch.column("behavior_type")[row].as_py()
            raise bad_row_error(
                spec, first_line, row, "behavior_type", f"{value!r} not in {o.behaviors}"
            )
        action = beh.to_numpy(zero_copy_only=False).astype(np.int64)
        ts = batch.column("timestamp").to_numpy()
        keep = np.ones(ts.size, bool)
        if o.ts_min:
            keep &= ts >= o.ts_min
        if o.ts_max:
            keep &= ts < o.ts_max
        self.drop("timestamp outside [ts_min, ts_max)", int((~keep).sum()))
        n = batch.num_rows
        cols = {
            "user": batch.column("user_id"), "item": batch.column("item_id"),
            "cat": batch.column("category_id"), "ts": ts, "sub": np.zeros(n, np.int64),
            "kind": np.zeros(n, np.int8), "action": action, "seq": seq_column(seq0, n),
            "lab_click": np.ones(n, np.int8),
        }  # fmt: skip
        for b in o.label_behaviors:
            cols[f"lab_{b}"] = (action == o.behaviors.index(b)).astype(np.int8)
        table = pa.table(cols, schema=event_schema(self.label_names))
        return table.filter(pa.array(keep)) if not keep.all() else table

    def after_pass1(self, ctx: Context) -> None:
        """Item popularity before ``valid_start`` and each item's category (one bucket pass)."""
        v = ctx.item_vocab.size
        pop = np.zeros(v, np.int64)
        item_cat = np.full(v, np.iinfo(np.int64).max, np.int64)
        for path in ctx.buckets:
            t = read_bucket(path)
            item = np.searchsorted(ctx.item_vocab, t.column("item").to_numpy())
            cat = np.searchsorted(ctx.cat_vocab, t.column("cat").to_numpy())
            ts = t.column("ts").to_numpy()
            pop += np.bincount(item[ts < ctx.cutoffs["valid_start"]], minlength=v)
            np.minimum.at(item_cat, item, cat)
        self._cdf = np.cumsum(pop).astype(np.float64)
        self._item_cat = item_cat

    def targets(self, reqs: Requests) -> TargetSet:
        """Distinct observed items per request, then the sampled negatives (module docstring)."""
        ev, o = reqs.ev, self.opts
        assert isinstance(o, TaobaoOptions)
        v = np.int64(max(self._item_cat.size, 1))
        r = reqs.event_request()
        key = r * v + ev.item
        uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
        labels = {}
        for name, lab in ev.labels.items():
            acc = np.zeros(uniq.size, np.int8)
            np.maximum.at(acc, inv, lab)
            labels[name] = acc
        order = np.argsort(first, kind="stable")
        first = first[order]
        pos_req, pos_item, pos_cat = r[first], ev.item[first], ev.cat[first]
        labels = {k: a[order] for k, a in labels.items()}

        n_pos = np.bincount(pos_req, minlength=len(reqs))
        k = np.floor(o.neg_ratio * n_pos + 0.5).astype(np.int64)
        total = self._cdf[-1] if self._cdf.size else 0.0
        if total <= 0 or k.sum() == 0:
            k[:] = 0
        neg_req = np.repeat(np.arange(len(reqs)), k)
        draw = np.arange(neg_req.size) - np.repeat(np.cumsum(k) - k, k)
        u = hash_uniform(self.cfg.seed, _NEG_SALT, reqs.key[neg_req], draw)
        neg_item = np.searchsorted(self._cdf, u * total, side="right") if neg_req.size else neg_req
        nkey = neg_req * v + neg_item
        _, nfirst = np.unique(nkey, return_index=True)
        keep = np.zeros(nkey.size, bool)
        keep[nfirst] = True
        keep &= ~np.isin(nkey, uniq)
        neg_req, neg_item = neg_req[keep], neg_item[keep]

        req = np.concatenate([pos_req, neg_req])
        order = np.argsort(req, kind="stable")
        item = np.concatenate([pos_item, neg_item])[order]
        cat = np.concatenate([pos_cat, self._item_cat[neg_item]])[order]
        zeros = np.zeros(neg_req.size, np.int8)
        labels = {n: np.concatenate([a, zeros])[order] for n, a in labels.items()}
        sampled = np.concatenate([np.zeros(pos_req.size, np.int8), np.ones(neg_req.size, np.int8)])
        return TargetSet(req[order], item, cat, labels, {"is_sampled": sampled[order]})


#: the names `longseq.datasets.convert.registry` looks up
Options = TaobaoOptions
Converter = TaobaoConverter
