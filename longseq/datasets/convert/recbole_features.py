"""User and candidate features of RecBole atomic files: the ``.user`` / ``.item`` fields named by
``recbole.user_features`` / ``recbole.item_features`` (`features.FieldFeature`), taken from the
side tables already parsed by their declared types (`atomic_tables.SideTable`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from longseq.datasets.convert.atomic import read_header
from longseq.datasets.convert.features import SideFeature, from_codes, from_values

if TYPE_CHECKING:
    from longseq.datasets.convert.recbole import RecBoleConverter

#: the atomic types each kind reads
TYPES = {"id": ("token",), "multi_hot": ("token", "token_seq"), "dense": ("token", "float")}


def side_features(conv: RecBoleConverter, item: Path, user: Path) -> list[SideFeature]:
    """The declared features; a side file that is absent gives none (and a note)."""
    o = conv._o
    out: list[SideFeature] = []
    sides = (
        ("user", "user", user, conv.user_table, o.user_features, "user_features"),
        ("candidate", "item", item, conv.item_table, o.item_features, "item_features"),
    )
    for side, by, path, table, fields, key in sides:
        if not fields:
            continue
        if table is None:
            conv.note(f"{path}: file not found, so no {side} features (recbole.{key})")
            continue
        header = read_header(path, o.field_separator)
        lines = np.arange(len(table), dtype=np.int64) + 2
        for i, ff in enumerate(fields):
            option = f"recbole.{key}[{i}].field"
            f = header.require(ff.field, option, TYPES[ff.kind])
            if ff.field == table.key:
                raise ValueError(f"{path}: field {ff.field!r} ({option}) is the key, not a feature")
            col = table.columns[ff.field]
            if f.type == "float":
                assert col.values is not None
                out.append(from_values(ff, side, by, table.ids, col.values, str(path)))
                continue
            assert col.codes is not None
            out.append(
                from_codes(ff, side, by, table.ids, col.codes, col.vocab, str(path), lines,
                           col.offsets)
            )  # fmt: skip
    return out
