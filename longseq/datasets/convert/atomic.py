"""RecBole *atomic files*: the header, its declared types, and token ids.

An atomic file (``<name>.inter``, ``.item``, ``.user``, ...; RecBole's data format) is plain
text, one row a line, fields separated by ``field_separator`` (a tab), no quoting. Its first line
is the header: one ``name:type`` per field, ``type`` one of :data:`ATOMIC_TYPES`:

- ``token``: a categorical value (an id, a gender, a year), kept as its text;
- ``token_seq``: several tokens in one field, separated by ``seq_separator`` (a space);
- ``float``: a number (a rating, a timestamp);
- ``float_seq``: several numbers in one field (a vector).

The types are read from the header, never guessed from the values. Token values become int64
ids by :func:`token_ids`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: the field types RecBole defines (``recbole.utils.enum_type.FeatureType``)
ATOMIC_TYPES: tuple[str, ...] = ("token", "token_seq", "float", "float_seq")

#: a token that is a canonical non-negative decimal integer (no sign, no leading zero) below 10^18
_INT_TOKEN = r"^(0|[1-9][0-9]{0,17})$"


@dataclass(frozen=True)
class AtomicField:
    """One header field: ``name`` and its declared ``type`` (one of :data:`ATOMIC_TYPES`)."""

    name: str
    type: str

    @property
    def column(self) -> str:
        """The header text of the field (``name:type``): the column name when reading."""
        return f"{self.name}:{self.type}"


@dataclass
class AtomicHeader:
    """The parsed header line of an atomic file."""

    path: Path
    fields: list[AtomicField]

    def get(self, name: str) -> AtomicField | None:
        """The field called ``name``, if any."""
        return next((f for f in self.fields if f.name == name), None)

    def require(self, name: str, option: str, types: tuple[str, ...]) -> AtomicField:
        """The field ``name`` (set by the config key ``option``), which must have one of
        ``types``; ``ValueError`` naming the file, the field and the key otherwise."""
        f = self.get(name)
        if f is None:
            have = [x.column for x in self.fields]
            raise ValueError(
                f"{self.path}: line 1 (header): no field {name!r} ({option}); fields: {have}"
            )
        if f.type not in types:
            raise ValueError(
                f"{self.path}: line 1 (header), field {f.column!r} ({option}): type {f.type!r}, "
                f"must be {'|'.join(types)}"
            )
        return f


def read_header(path: Path, separator: str) -> AtomicHeader:
    """Parse the header line of ``path``; errors name the file, line 1 and the field: a missing
    file, an empty file, a field without ``:type``, an unknown type, a repeated name."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        first = f.readline().rstrip("\r\n")
    if not first:
        raise ValueError(f"{path}: empty file (an atomic file starts with a name:type header)")
    fields: list[AtomicField] = []
    for i, text in enumerate(first.split(separator), 1):
        where = f"{path}: line 1 (header), field {i} {text!r}"
        parts = text.split(":")
        if len(parts) != 2 or not parts[0]:
            raise ValueError(f"{where}: not name:type (type: {'|'.join(ATOMIC_TYPES)})")
        name, typ = parts
        if typ not in ATOMIC_TYPES:
            raise ValueError(f"{where}: unknown type {typ!r}, must be {'|'.join(ATOMIC_TYPES)}")
        if any(x.name == name for x in fields):
            raise ValueError(f"{where}: field name {name!r} repeated")
        fields.append(AtomicField(name, typ))
    return AtomicHeader(path, fields)


def _hash_token(text: str) -> int:
    """A negative int64 from the BLAKE2b hash of ``text`` (never equal to an integer token)."""
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return -(h >> 1) - 1


def token_ids(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The int64 id of each token: a canonical non-negative decimal integer below 10^18 is
    itself (``"196"`` -> 196, so ML-100K keeps its ids); any other token (``"B00X"``,
    ``"007"``, ``"-3"``) is a negative 63-bit hash of its text, so the two kinds never collide
    and the id depends on the token alone (not on file order). Empty tokens are the caller's
    to reject."""
    col = pc.cast(col, pa.string())
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    is_int = pc.match_substring_regex(col, _INT_TOKEN).to_numpy(zero_copy_only=False)
    if is_int.all():
        return pc.cast(col, pa.int64()).to_numpy()
    out = np.empty(len(col), np.int64)
    if is_int.any():
        out[is_int] = pc.cast(col.filter(pa.array(is_int)), pa.int64()).to_numpy()
    enc = col.filter(pa.array(~is_int)).dictionary_encode()
    hashed = np.array([_hash_token(t) for t in enc.dictionary.to_pylist()], np.int64)
    out[~is_int] = hashed[enc.indices.to_numpy()]
    return out
