"""RecBole atomic files -> request-level Parquet (``dataset=recbole``).

Input (under ``<src>``): ``<name>.inter`` and, in the same folder, ``<name>.item`` and
``<name>.user`` when present (RecBole's format, `longseq.datasets.convert.atomic`: tab-separated,
a ``name:type`` header). The fields playing each role are options; the defaults read
MovieLens-100K as RecBole ships it (``user_id:token item_id:token rating:float
timestamp:float``; ``.item``: ``item_id movie_title release_year class``).

- requests: a user's interactions grouped into sessions by gap (``gap_s``, ``max_targets``);
- targets: the session's items, ``tgt_<task>`` = ``label_field`` >= ``threshold``;
- history: every earlier interaction, ``hist_action`` = round(``label_field`` x
  ``action_scale``), which must lie in ``[0, num_actions)``;
- time: ``time_field`` in whole seconds (a fractional value is an error);
- category: from ``category_field`` of ``.item``, a ``token`` (its value) or ``token_seq``
  (``category_rule``: ``first`` = its first token, ``combination`` = the set of its tokens as
  one category), numbered in name order; an item missing from ``.item`` or with an empty field
  gets the one "unknown" category;
- ids: `atomic.token_ids` (integer tokens stay themselves; other tokens are hashed).

The ``.item`` and ``.user`` fields are parsed by their declared types into
`atomic_tables.SideTable` (``item_table``, ``user_table``); the fields named by
``user_features`` / ``item_features`` become user and candidate features (`recbole_features`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from longseq.datasets.convert.atomic import AtomicField, read_header, token_ids
from longseq.datasets.convert.atomic_tables import SideTable, read_side_table
from longseq.datasets.convert.base import Converter, find_files, seq_column
from longseq.datasets.convert.csvsource import CsvSpec, bad_row_error
from longseq.datasets.convert.features import FieldFeature, field_checks
from longseq.datasets.convert.options import DatasetOptions
from longseq.datasets.convert.partition import event_schema

CATEGORY_RULES = ("first", "combination")
_ROLES = ("user", "item", "time", "label")


@dataclass
class RecBoleOptions(DatasetOptions):
    """RecBole atomic files (defaults: ML-100K as shipped in ``recbole==1.2.1``).

    Attributes:
        name: the files' stem (``<name>.inter``, ``.item``, ``.user``); empty: the one
            ``*.inter`` file under ``src``.
        user_field, item_field: ``token`` fields of ``.inter``; also the keys of ``.user`` and
            ``.item``.
        time_field: a ``float`` field of ``.inter``, whole seconds.
        label_field: a ``float`` field of ``.inter``; ``tgt_<task>`` = value >= ``threshold``.
        threshold, task: the label rule and the task name.
        action_scale, num_actions: ``hist_action`` = round(label value x ``action_scale``),
            in ``[0, num_actions)`` (ratings 0..5 in half steps -> 0..10).
        category_field: a ``token`` or ``token_seq`` field of ``.item`` (empty: one category
            for every item, and ``.item`` is optional).
        category_rule: ``first`` (the field's first token) or ``combination`` (the sorted set
            of its tokens, joined by ``|``, is the category).
        field_separator, seq_separator: between fields, and between the tokens of a ``*_seq``
            field (RecBole's ``field_separator`` and ``seq_separator``).
        user_features, item_features: fields of ``.user`` / ``.item`` made user / candidate
            features (`features.FieldFeature`): a ``token`` field -> ``id`` (or ``dense``: a
            number), a ``token_seq`` field -> ``multi_hot``, a ``float`` field -> ``dense``.
            Defaults (ML-100K): age in the MovieLens-1M age groups, gender, occupation; genres
            (``class``, multi-hot) and release year (dense, standardised).
    """

    max_hist_len: int = 2000
    gap_s: int = 1800
    max_targets: int = 64
    name: str = ""
    user_field: str = "user_id"
    item_field: str = "item_id"
    time_field: str = "timestamp"
    label_field: str = "rating"
    threshold: float = 4.0
    task: str = "like"
    action_scale: float = 2.0
    num_actions: int = 11
    category_field: str = "class"
    category_rule: str = "first"
    field_separator: str = "\t"
    seq_separator: str = " "
    user_features: list[FieldFeature] = field(default_factory=lambda: [
        FieldFeature("age", "id", buckets=[18, 25, 35, 45, 50, 56]),
        FieldFeature("gender", "id"), FieldFeature("occupation", "id"),
    ])  # fmt: skip
    item_features: list[FieldFeature] = field(default_factory=lambda: [
        FieldFeature("class", "multi_hot", name="genres"),
        FieldFeature("release_year", "dense", name="year", transform="standardize",
                     not_number="missing"),  # ML-100K has one 'V'  # fmt: skip
    ])  # fmt: skip

    def checks(self, prefix: str) -> list[tuple[str, bool, str]]:
        roles = [f"{r}_field" for r in _ROLES]
        names = [getattr(self, r) for r in roles]
        return super().checks(prefix) + [
            *[(f"{prefix}.{r}", bool(getattr(self, r)), "non-empty") for r in roles],
            (f"{prefix}.{roles[1]}", len(set(names)) == len(names), "distinct from the others"),
            (f"{prefix}.task", bool(self.task), "non-empty"),
            (f"{prefix}.category_rule", self.category_rule in CATEGORY_RULES, "first|combination"),
            (f"{prefix}.action_scale", self.action_scale >= 0, ">= 0"),
            (f"{prefix}.num_actions", self.num_actions >= 1, ">= 1"),
            (f"{prefix}.field_separator", len(self.field_separator) == 1, "one character"),
            *field_checks(f"{prefix}.user_features", self.user_features),
            *field_checks(f"{prefix}.item_features", self.item_features),
            (
                f"{prefix}.seq_separator",
                bool(self.seq_separator) and self.seq_separator != self.field_separator,
                "non-empty and not field_separator",
            ),
        ]


@dataclass
class RecBoleConverter(Converter):
    """See the module docstring."""

    #: ``.item`` parsed by its header's types (None: no such file)
    item_table: SideTable | None = None
    #: ``.user`` parsed by its header's types (None: no such file)
    user_table: SideTable | None = None
    #: the category names; raw category id ``i`` is ``category_names[i]`` (-1: unknown)
    category_names: list[str] = field(default_factory=list)
    _inter: Path = Path()
    _fields: dict[str, AtomicField] = field(default_factory=dict)
    _cat_items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    _cat_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        o = self._o
        self.tasks = [o.task]
        self.num_actions = o.num_actions

    @property
    def _o(self) -> RecBoleOptions:
        o = self.opts
        assert isinstance(o, RecBoleOptions)
        return o

    def inputs(self, src: Path) -> list[CsvSpec]:
        o = self._o
        pattern = f"{o.name}.inter" if o.name else "*.inter"
        found = find_files(src, pattern)
        if len(found) != 1:
            raise FileNotFoundError(
                f"src={src}: {len(found) or 'no'} {pattern} file(s) (RecBole atomic files)"
                + (f": {[str(p) for p in found]}; choose one with recbole.name" if found else "")
            )
        self._inter = found[0]
        self.variant = f"RecBole atomic files ({self._inter.stem})"
        header = read_header(self._inter, o.field_separator)
        want = {"user": ("token",), "item": ("token",), "time": ("float",), "label": ("float",)}
        self._fields = {
            r: header.require(getattr(o, f"{r}_field"), f"recbole.{r}_field", want[r])
            for r in _ROLES
        }
        types = {
            f.column: pa.string() if f.type == "token" else pa.float64()
            for f in self._fields.values()
        }
        return [CsvSpec(self._inter, types, None, o.field_separator, kind="inter", quote=False)]

    def prepare(self, src: Path) -> None:
        """Read ``.item`` and ``.user`` (next to ``.inter``) and derive item categories."""
        o = self._o
        item, user = self._inter.with_suffix(".item"), self._inter.with_suffix(".user")
        seps = (o.field_separator, o.seq_separator)
        if o.category_field and not item.is_file():
            raise FileNotFoundError(
                f"{item}: file not found (recbole.category_field={o.category_field!r} reads it; "
                "recbole.category_field='' gives every item one category)"
            )
        if item.is_file():
            if o.category_field:
                read_header(item, o.field_separator).require(
                    o.category_field, "recbole.category_field", ("token", "token_seq")
                )
            self.item_table = read_side_table(item, o.item_field, "recbole.item_field", *seps)
        if user.is_file():
            self.user_table = read_side_table(user, o.user_field, "recbole.user_field", *seps)
        if o.category_field and self.item_table is not None:
            self._categories(self.item_table, o.category_field, o.category_rule)
        if o.features:
            from longseq.datasets.convert.recbole_features import side_features

            self.side_features = side_features(
                item, user, self.item_table, self.user_table, o.item_features, o.user_features,
                o.field_separator, self.note,
            )  # fmt: skip

    def _categories(self, items: SideTable, name: str, rule: str) -> None:
        col = items.columns[name]
        per_row: list[str | None] = []
        for r in range(len(items)):
            toks = col.tokens(r)
            if not toks:
                per_row.append(None)
            elif rule == "first":
                per_row.append(toks[0])
            else:
                per_row.append("|".join(sorted(set(toks))))
        self.category_names = sorted({c for c in per_row if c is not None})
        index = {c: i for i, c in enumerate(self.category_names)}
        order = np.argsort(items.ids, kind="stable")
        self._cat_items = items.ids[order]
        cats = np.array([-1 if c is None else index[c] for c in per_row], np.int64)
        self._cat_ids = cats[order]

    def _category(self, item: np.ndarray) -> np.ndarray:
        """Category of each item id; -1 where unknown."""
        if self._cat_items.size == 0:
            return np.full(item.size, -1, np.int64)
        i = np.minimum(np.searchsorted(self._cat_items, item), self._cat_items.size - 1)
        return np.where(self._cat_items[i] == item, self._cat_ids[i], -1)

    def normalize(
        self, batch: pa.RecordBatch, spec: CsvSpec, first_line: int, seq0: int
    ) -> pa.Table:
        o = self._o
        col = {r: batch.column(f.column) for r, f in self._fields.items()}

        def fail(role: str, row: int, what: str) -> ValueError:
            return bad_row_error(spec, first_line, row, self._fields[role].column, what)

        for r in _ROLES:
            c = col[r]
            empty = c.is_null() if c.type != pa.string() else pc.equal(c, "")
            rows = np.flatnonzero(empty.to_numpy(zero_copy_only=False))
            if rows.size:
                raise fail(r, int(rows[0]), f"empty value (recbole.{r}_field)")
        ts = col["time"].to_numpy()
        bad = np.flatnonzero(~np.isfinite(ts) | (ts != np.floor(ts)) | (np.abs(ts) >= 2.0**62))
        if bad.size:
            raise fail(
                "time", int(bad[0]), f"{float(ts[bad[0]])!r} is not a whole number of seconds"
            )
        value = col["label"].to_numpy()
        action = np.rint(value * o.action_scale)
        bad = np.flatnonzero(~np.isfinite(value) | (action < 0) | (action >= o.num_actions))
        if bad.size:
            v = float(value[bad[0]])
            raise fail(
                "label",
                int(bad[0]),
                f"{v!r} x recbole.action_scale={o.action_scale} is not an action in "
                f"[0, recbole.num_actions={o.num_actions})",
            )
        item = token_ids(col["item"])
        n = batch.num_rows
        cols = {
            "user": token_ids(col["user"]), "item": item, "cat": self._category(item),
            "ts": ts.astype(np.int64), "sub": np.zeros(n, np.int64), "kind": np.zeros(n, np.int8),
            "action": action.astype(np.int64), "seq": seq_column(seq0, n),
            f"lab_{o.task}": (value >= o.threshold).astype(np.int8),
        }  # fmt: skip
        return pa.table(cols, schema=event_schema(self.label_names))


#: the names `longseq.datasets.convert.registry` looks up
Options = RecBoleOptions
Converter = RecBoleConverter
