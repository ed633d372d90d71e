"""User and candidate features of RecBole atomic files: the ``.user`` / ``.item`` fields named by
``recbole.user_features`` / ``recbole.item_features`` (`features.FieldFeature`), taken from the
side tables already parsed by their declared types (`atomic_tables.SideTable`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from longseq.datasets.convert.atomic import read_header
from longseq.datasets.convert.atomic_tables import SideTable
from longseq.datasets.convert.features import FieldFeature, SideFeature, from_codes, from_values

#: the atomic types each kind reads
TYPES = {"id": ("token",), "multi_hot": ("token", "token_seq"), "dense": ("token", "float")}


def side_features(
    item: Path,
    user: Path,
    item_table: SideTable | None,
    user_table: SideTable | None,
    item_features: list[FieldFeature],
    user_features: list[FieldFeature],
    field_separator: str,
    note: Callable[[str], None],
) -> list[SideFeature]:
    """The features ``recbole.user_features`` / ``recbole.item_features`` declare, from the
    parsed side tables of ``user`` / ``item``; a side file that is absent gives none (and a
    ``note``)."""
    out: list[SideFeature] = []
    sides = (
        ("user", "user", user, user_table, user_features, "user_features"),
        ("candidate", "item", item, item_table, item_features, "item_features"),
    )
    for side, by, path, table, fields, key in sides:
        if not fields:
            continue
        if table is None:
            note(f"{path}: file not found, so no {side} features (recbole.{key})")
            continue
        header = read_header(path, field_separator)
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
