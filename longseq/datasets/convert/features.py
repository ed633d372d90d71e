"""Side features of the converters: per-user and per-item attributes read from a data set's side
files, joined onto the request rows (``feat_<name>``: by user id) and onto every target
(``tgt_feat_<name>``: by item id), declared in ``meta.json`` (`longseq.data.features`).

Rules (``docs/datasets.md``, "Side features"):

- ``id``: the field's distinct non-empty values sorted by text, value ``k`` (0-based) -> id
  ``k + 1``; id **0 is reserved** for an unknown user/item or an empty value; cardinality =
  values + 1. Where that exceeds ``cardinality`` (an option, 0: no limit) the value is hashed:
  ``1 + splitmix64(token id) % (cardinality - 1)``. With ``buckets`` (sorted bounds) a numeric
  value ``x`` -> ``1 + #{b <= x}`` instead (MovieLens age groups);
- ``multi_hot``: the same ids for each token of the field (sorted, distinct); an unknown key or
  an empty field -> ``[0]``;
- ``dense``: a number; an unknown key or an empty value -> the value whose transform is the train
  mean, so the standardised input is 0. ``mean``/``std`` of the transformed value (``log1p`` for
  the ``log1p*`` transforms) over the **train** rows (`feature_pass`).
- the ``hour`` context feature: the hour of ``request_ts`` in local time (ids 0..23, nothing
  reserved).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.data.features import KINDS, POOLINGS, TRANSFORMS, FeatureSpec
from longseq.datasets.convert.atomic import token_ids
from longseq.datasets.convert.hashing import splitmix64
from longseq.log import get_logger

log = get_logger("longseq.convert")

UNKNOWN = 0  #: the reserved id of an unknown user/item or an empty value


@dataclass
class FieldFeature:
    """One side-file field made a feature (an entry of ``user_features`` / ``item_features``).

    Attributes:
        field: the column of the side file.
        kind: ``id``, ``multi_hot`` or ``dense``.
        name: the feature name (default: ``field`` in lower case, other characters ``_``).
        cardinality: ``id``/``multi_hot``: the largest table; a larger vocabulary is hashed
            into it (0: no limit, cardinality = values + 1).
        transform: ``dense``: none, log1p, standardize, log1p_standardize.
        pooling: ``multi_hot``: mean or sum.
        buckets: ``id`` of a numeric field: sorted bounds, value ``x`` -> ``1 + #{b <= x}``.
        separator: ``multi_hot`` of a CSV field: between tokens (RecBole: ``seq_separator``).
        group: the RankMixer token group (empty: the side).
        not_number: ``dense`` (and ``buckets``) text that is not a number: ``error`` (stop,
            naming the file, line and field) or ``missing`` (treated as an empty value, each
            such line logged and counted in ``stats.json``: a published file with a known bad
            cell, as ML-100K's ``release_year`` 'V').
    """

    field: str = ""
    kind: str = "id"
    name: str = ""
    cardinality: int = 0
    transform: str = "standardize"
    pooling: str = "mean"
    buckets: list[float] = dc_field(default_factory=list)
    separator: str = ","
    group: str = ""
    not_number: str = "error"

    @property
    def feature_name(self) -> str:
        return self.name or re.sub(r"[^a-z0-9_]", "_", self.field.lower()).lstrip("_0123456789")

    def checks(self, key: str) -> list[tuple[str, bool, str]]:
        b = list(self.buckets)
        return [
            (f"{key}.field", bool(self.field), "non-empty"),
            (f"{key}.kind", self.kind in KINDS, "|".join(KINDS)),
            (
                f"{key}.name",
                bool(re.match(r"^[a-z][a-z0-9_]*$", self.feature_name)),
                "[a-z][a-z0-9_]* (set name)",
            ),  # fmt: skip
            (f"{key}.cardinality", self.cardinality == 0 or self.cardinality >= 2, "0 or >= 2"),
            (f"{key}.transform", self.transform in TRANSFORMS, "|".join(TRANSFORMS)),
            (f"{key}.pooling", self.pooling in POOLINGS, "|".join(POOLINGS)),
            (f"{key}.buckets", b == sorted(b) and (not b or self.kind == "id"), "sorted, id only"),
            (f"{key}.not_number", self.not_number in ("error", "missing"), "error|missing"),
        ]


def field_checks(key: str, fields: list[FieldFeature]) -> list[tuple[str, bool, str]]:
    """The checks of every entry and distinct names."""
    out = [c for i, f in enumerate(fields) for c in f.checks(f"{key}[{i}]")]
    names = [f.feature_name for f in fields]
    return out + [(key, len(set(names)) == len(names), "of distinct feature names")]


def _transform(spec: FeatureSpec, x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(x, 0.0)) if spec.transform.startswith("log1p") else x


@dataclass
class SideFeature:
    """One feature's values per key (a user or item id), ready to join.

    ``by``: ``user`` (request rows), ``item`` (targets) or ``hour`` (request time). Rows are in
    file order; a key repeated later in the file is ignored (the first row wins).
    """

    spec: FeatureSpec
    by: str
    keys: np.ndarray
    ids: np.ndarray | None = None  #: id: per row; multi_hot: flat (see offsets)
    offsets: np.ndarray | None = None
    values: np.ndarray | None = None  #: dense: per row, NaN = empty
    vocabulary: int = 0
    hashed: bool = False
    source: str = ""
    fill: float = 0.0  #: dense: written for a missing value (set by `feature_pass`)
    not_numbers: int = 0  #: rows whose text was not a number, read as missing (``not_number``)
    tz_offset_s: int = 0  #: hour: local time offset
    _sk: np.ndarray = dc_field(default_factory=lambda: np.zeros(0, np.int64))
    _so: np.ndarray = dc_field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        order = np.argsort(self.keys, kind="stable")
        k = self.keys[order]
        first = np.concatenate(([True], k[1:] != k[:-1])) if k.size else np.zeros(0, bool)
        self._sk, self._so = k[first], order[first]

    def rows(self, keys: np.ndarray) -> np.ndarray:
        """The file row of each key (-1: not in the file)."""
        if self._sk.size == 0:
            return np.full(keys.shape, -1, np.int64)
        i = np.minimum(np.searchsorted(self._sk, keys), self._sk.size - 1)
        return np.where(self._sk[i] == keys, self._so[i], -1)

    def raw(self, keys: np.ndarray) -> np.ndarray:
        """``dense``: the value of each key (NaN: missing)."""
        r = self.rows(keys)
        assert self.values is not None
        return np.where(r >= 0, self.values[np.maximum(r, 0)], np.nan) if r.size else r * 1.0

    def missing(self, keys: np.ndarray) -> np.ndarray:
        """Whether each key has no value (unknown key or empty field)."""
        if self.by == "hour":
            return np.zeros(keys.shape, bool)
        r = self.rows(keys)
        if self.spec.kind == "dense":
            return np.isnan(self.raw(keys))
        ok = r >= 0
        if self.spec.kind == "id":
            assert self.ids is not None
            return ~ok | (self.ids[np.maximum(r, 0)] == UNKNOWN)
        assert self.offsets is not None and self.ids is not None
        rr = np.maximum(r, 0)
        first = self.ids[np.minimum(self.offsets[rr], self.ids.size - 1)] if self.ids.size else rr
        return ~ok | ((self.offsets[rr + 1] - self.offsets[rr] == 1) & (first == UNKNOWN))

    def transformed(self, keys: np.ndarray) -> np.ndarray:
        """``dense``: the transformed value before standardisation (NaN: missing)."""
        return _transform(self.spec, self.raw(keys))

    def column(self, keys: np.ndarray) -> pa.Array:
        """The values of ``keys``: int64, list<int64> or double (one per key)."""
        kind = self.spec.kind
        if self.by == "hour":
            return pa.array((keys + self.tz_offset_s) // 3600 % 24, pa.int64())
        if kind == "dense":
            v = self.raw(keys)
            return pa.array(np.where(np.isnan(v), self.fill, v), pa.float64())
        r = self.rows(keys)
        assert self.ids is not None
        if kind == "id":
            return pa.array(np.where(r >= 0, self.ids[np.maximum(r, 0)], UNKNOWN), pa.int64())
        assert self.offsets is not None
        ext = np.append(self.ids, UNKNOWN)  # the [0] of a missing key
        start = np.where(r >= 0, self.offsets[np.maximum(r, 0)], self.ids.size)
        lens = np.where(r >= 0, np.diff(self.offsets)[np.maximum(r, 0)], 1)
        off = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
        idx = np.repeat(start - off[:-1], lens) + np.arange(off[-1], dtype=np.int64)
        return pa.ListArray.from_arrays(pa.array(off, pa.int32()), pa.array(ext[idx], pa.int64()))

    def summary(self) -> dict:
        """The feature's line of ``stats.json`` (without the train counts)."""
        out = {"side": self.spec.side, "kind": self.spec.kind, "source": Path(self.source).name}
        if self.not_numbers:
            out["not_numbers_read_as_missing"] = self.not_numbers
        if self.spec.sparse:
            out |= {"vocabulary": self.vocabulary, "cardinality": self.spec.cardinality,
                    "hashed": self.hashed}  # fmt: skip
        return out


def hour_feature(name: str, tz_offset_s: int) -> SideFeature:
    """The context feature ``name``: the local hour of the request (ids 0..23)."""
    spec = FeatureSpec(name, "context", "id", cardinality=24)
    return SideFeature(spec, "hour", np.zeros(0, np.int64), tz_offset_s=tz_offset_s,
                       vocabulary=24, source="request_ts")  # fmt: skip


def _numbers(vocab: list[str], where, lenient: bool = False) -> np.ndarray:
    """float64 of each text (``where(i, text)``: the error naming the row of vocab entry i);
    ``lenient``: a text that is not a number is NaN (missing), logged by its line."""
    out = np.empty(len(vocab))
    for i, t in enumerate(vocab):
        try:
            out[i] = float(t)
        except ValueError:
            err = where(i, f"{t!r} is not a number")
            if not lenient:
                raise err from None
            log.warning(f"{err} (not_number=missing: read as a missing value)")
            out[i] = np.nan
    return out


def _id_table(ff: FieldFeature, vocab: list[str], where) -> tuple[np.ndarray, int, bool]:
    """(id of each vocabulary entry, cardinality, hashed)."""
    if ff.buckets:
        x = _numbers(vocab, where)
        bounds = np.asarray(ff.buckets, np.float64)
        return 1 + np.searchsorted(bounds, x, side="right"), len(bounds) + 2, False
    n = len(vocab) + 1
    if ff.cardinality == 0 or n <= ff.cardinality:
        return np.arange(1, n, dtype=np.int64), n, False
    h = splitmix64(token_ids(pa.array(vocab, pa.string())))
    return (1 + h % np.uint64(ff.cardinality - 1)).astype(np.int64), ff.cardinality, True


def from_codes(
    ff: FieldFeature, side: str, by: str, keys: np.ndarray, codes: np.ndarray, vocab: list[str],
    source: str, lines: np.ndarray, offsets: np.ndarray | None = None,
) -> SideFeature:  # fmt: skip
    """A feature from codes into a sorted vocabulary (-1: empty), one per row or flat with
    ``offsets`` (a token list per row); ``lines``: the file line of each row (errors)."""
    flat_row = np.repeat(np.arange(keys.size), np.diff(offsets)) if offsets is not None else None

    def where(i: int, what: str) -> ValueError:
        at = int(np.flatnonzero(codes == i)[0])
        row = flat_row[at] if flat_row is not None else at
        return ValueError(f"{source}: line {int(lines[row])}, field {ff.field!r}: {what}")

    name = ff.feature_name
    if ff.kind == "dense":
        if offsets is not None:
            raise ValueError(f"{source}: field {ff.field!r}: a list field cannot be dense")
        x = _numbers(vocab, where, ff.not_number == "missing")
        vals = np.where(codes >= 0, x[np.maximum(codes, 0)] if x.size else 0.0, np.nan)
        feat = from_values(ff, side, by, keys, vals, source)
        feat.not_numbers = int(np.isnan(x[codes[codes >= 0]]).sum()) if x.size else 0
        return feat
    table, card, hashed = _id_table(ff, vocab, where)
    ids = np.where(codes >= 0, table[np.maximum(codes, 0)] if table.size else 0, UNKNOWN)
    spec = FeatureSpec(name, side, ff.kind, cardinality=int(card), pooling=ff.pooling,
                       group=ff.group)  # fmt: skip
    common = dict(vocabulary=len(vocab), hashed=hashed, source=source)
    if ff.kind == "id":
        if offsets is not None:
            raise ValueError(f"{source}: field {ff.field!r}: a list field must be multi_hot")
        return SideFeature(spec, by, keys, ids=ids.astype(np.int64), **common)
    if offsets is None:
        offsets = np.arange(keys.size + 1, dtype=np.int64)
        flat_row = np.arange(keys.size)
    row = np.repeat(np.arange(keys.size), np.diff(offsets))
    keep = ids != UNKNOWN
    pairs = np.unique(np.stack([row[keep], ids[keep]], 1), axis=0).reshape(-1, 2)
    n = np.bincount(pairs[:, 0], minlength=keys.size)
    empty = n == 0  # -> [UNKNOWN]
    row2 = np.concatenate([pairs[:, 0], np.flatnonzero(empty)])
    ids2 = np.concatenate([pairs[:, 1], np.full(int(empty.sum()), UNKNOWN)])
    order = np.lexsort((ids2, row2))
    off = np.concatenate(([0], np.cumsum(np.maximum(n, 1)))).astype(np.int64)
    return SideFeature(spec, by, keys, ids=ids2[order].astype(np.int64), offsets=off, **common)


def from_values(
    ff: FieldFeature, side: str, by: str, keys: np.ndarray, values: np.ndarray, source: str
) -> SideFeature:
    """A ``dense`` feature from numbers per row (NaN: empty)."""
    spec = FeatureSpec(ff.feature_name, side, "dense", transform=ff.transform, group=ff.group)
    return SideFeature(spec, by, keys, values=np.asarray(values, np.float64), source=source)


def from_text(
    ff: FieldFeature, side: str, by: str, keys: np.ndarray, text: pa.Array, source: str,
    lines: np.ndarray,
) -> SideFeature:  # fmt: skip
    """A feature from one text value per row (a CSV column; ``""`` or null: empty); a
    ``multi_hot`` field is split by ``ff.separator``."""
    text = pc.utf8_trim_whitespace(pc.fill_null(pc.cast(text, pa.string()), ""))
    offsets = None
    if ff.kind == "multi_hot":
        parts = pc.split_pattern(text, ff.separator)
        flat = pc.utf8_trim_whitespace(pc.list_flatten(parts))
        keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
        row = pc.list_parent_indices(parts).to_numpy()[keep]
        text = flat.filter(pa.array(keep))
        offsets = np.searchsorted(row, np.arange(keys.size + 1)).astype(np.int64)
    vocab = sorted(v for v in pc.unique(text).to_pylist() if v)
    idx = pc.index_in(text, value_set=pa.array(vocab, pa.string()))
    codes = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return from_codes(ff, side, by, keys, codes, vocab, source, lines, offsets)
