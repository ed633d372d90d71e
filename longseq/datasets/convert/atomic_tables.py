"""RecBole side tables (``.item``, ``.user``): read whole, one typed column per field.

A side table is keyed by a token field (``item_id``, ``user_id``); every other field becomes a
:class:`FeatureColumn` of its declared type, so a later stage (the ranker's user and candidate
features) can take them as they are: token fields as codes into a sorted vocabulary, token
sequences as flat codes with offsets, floats as float64 (NaN where empty), float sequences as
flat values with offsets. Side tables are small (one row per item or user) and held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.datasets.convert.atomic import AtomicField, AtomicHeader, read_header, token_ids
from longseq.datasets.convert.csvsource import CsvSpec, iter_blocks


@dataclass
class FeatureColumn:
    """One field of a side table, parsed by its declared type (rows in file order).

    Attributes:
        name, type: the header's ``name:type``.
        codes: ``token``: one code per row, the index of its value in ``vocab`` (-1: empty);
            ``token_seq``: the codes of all rows' tokens, concatenated (see ``offsets``).
        values: ``float``: one number per row (NaN: empty); ``float_seq``: all rows' numbers.
        offsets: ``*_seq``: row ``i`` holds elements ``offsets[i]:offsets[i + 1]``.
        vocab: ``token*``: the distinct non-empty tokens, sorted (a code is a position).
    """

    name: str
    type: str
    codes: np.ndarray | None = None
    values: np.ndarray | None = None
    offsets: np.ndarray | None = None
    vocab: list[str] = field(default_factory=list)

    def tokens(self, row: int) -> list[str]:
        """The tokens of one row (``token``: zero or one; ``token_seq``: in field order)."""
        assert self.codes is not None, f"{self.name}: not a token field"
        if self.offsets is None:
            c = int(self.codes[row])
            return [] if c < 0 else [self.vocab[c]]
        return [self.vocab[c] for c in self.codes[self.offsets[row] : self.offsets[row + 1]]]


@dataclass
class SideTable:
    """A parsed ``.item`` / ``.user`` file: the key's token ids and the other fields' columns."""

    path: Path
    key: str
    ids: np.ndarray  #: int64 token id of each row's key (`atomic.token_ids`)
    columns: dict[str, FeatureColumn]  #: every other field, by name, in header order

    def __len__(self) -> int:
        return int(self.ids.size)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The row of each id (-1 where the table has none)."""
        order = np.argsort(self.ids, kind="stable")
        keys = self.ids[order]
        if keys.size == 0:
            return np.full(np.shape(ids), -1, np.int64)
        i = np.minimum(np.searchsorted(keys, ids), keys.size - 1)
        return np.where(keys[i] == ids, order[i], -1)


def _codes(values: pa.Array) -> tuple[np.ndarray, list[str]]:
    """Codes into the sorted distinct non-empty values (-1 for empty)."""
    vocab = sorted(v for v in pc.unique(values).to_pylist() if v)
    idx = pc.index_in(values, value_set=pa.array(vocab, pa.string()))
    return pc.fill_null(idx, -1).to_numpy().astype(np.int64), vocab


def _numbers(values: pa.Array, f: AtomicField, path: Path, row_line: np.ndarray) -> np.ndarray:
    """float64 of each text value (empty: NaN); ``ValueError`` naming the line otherwise."""
    text = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
    try:
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for i, v in enumerate(text.to_pylist()):
            try:
                pc.cast(pa.array([v], pa.string()), pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                line = int(row_line[i])
                raise ValueError(
                    f"{path}: line {line}, field {f.column!r}: {v!r} is not a number"
                ) from None
        raise


def parse_column(
    f: AtomicField, text: pa.Array, path: Path, seq_separator: str, row_line: np.ndarray
) -> FeatureColumn:
    """One field's text values -> a :class:`FeatureColumn` of its declared type. ``row_line``
    is the file line of each row (for errors)."""
    if f.type == "token":
        codes, vocab = _codes(text)
        return FeatureColumn(f.name, f.type, codes=codes, vocab=vocab)
    parts = pc.split_pattern(text, seq_separator) if f.type.endswith("_seq") else None
    if parts is None:
        return FeatureColumn(f.name, f.type, values=_numbers(text, f, path, row_line))
    flat = pc.list_flatten(parts)
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)  # "a  b", "" -> no empties
    row = pc.list_parent_indices(parts).to_numpy()[keep]
    flat = flat.filter(pa.array(keep))
    offsets = np.searchsorted(row, np.arange(len(text) + 1)).astype(np.int64)
    if f.type == "token_seq":
        codes, vocab = _codes(flat)
        return FeatureColumn(f.name, f.type, codes=codes, offsets=offsets, vocab=vocab)
    values = _numbers(flat, f, path, row_line[row])
    return FeatureColumn(f.name, f.type, values=values, offsets=offsets)


def read_side_table(
    path: Path, key: str, option: str, field_separator: str, seq_separator: str
) -> SideTable:
    """Read the atomic file ``path`` keyed by the token field ``key`` (named by the config key
    ``option``). Errors name the file, the line and the field: see `atomic.read_header`, plus a
    row with the wrong number of fields, an empty or repeated key, a value that is not a number
    in a ``float`` field, and a file with no rows."""
    header: AtomicHeader = read_header(path, field_separator)
    kf = header.require(key, option, ("token",))
    spec = CsvSpec(
        path, {f.column: pa.string() for f in header.fields}, None, field_separator, quote=False
    )
    batches = [b for b, _ in iter_blocks(spec, 1 << 24)]
    if not batches or sum(b.num_rows for b in batches) == 0:
        raise ValueError(f"{path}: empty file (a header and no rows)")
    table = pa.Table.from_batches(batches)
    row_line = np.arange(table.num_rows, dtype=np.int64) + 2
    keys = table.column(kf.column).combine_chunks()
    empty = np.flatnonzero(pc.equal(keys, "").to_numpy(zero_copy_only=False))
    if empty.size:
        line = row_line[empty[0]]
        raise ValueError(f"{path}: line {line}, field {kf.column!r}: empty value ({option})")
    ids = token_ids(keys)
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        first, again = row_line[order[dup[0]]], row_line[order[dup[0] + 1]]
        raise ValueError(
            f"{path}: line {again}, field {kf.column!r}: "
            f"{keys[int(order[dup[0] + 1])].as_py()!r} repeats line {first}"
        )
    columns = {
        f.name: parse_column(
            f, table.column(f.column).combine_chunks(), path, seq_separator, row_line
        )
        for f in header.fields
        if f.name != key
    }
    return SideTable(path, key, ids, columns)
