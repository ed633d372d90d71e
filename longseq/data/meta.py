"""The data set's ``meta.json``: read and written here, and only here.

A data set folder holds ``meta.json`` beside its split folders. Its typed keys are
:class:`DatasetMeta`'s fields: the vocabulary sizes ``num_items``, ``num_categories`` and
``num_actions`` (required: the trainer sizes its embedding tables from them, the reader and the
validator check ids against them), and, optional, ``tasks`` (the ``tgt_<task>`` label columns),
``hist_len_max`` and ``targets_per_request`` (the default caps of ``data.max_hist_len`` /
``data.max_targets``), ``format``, ``num_requests`` (split -> requests), ``files`` (split ->
its Parquet files, relative to the data set folder) and ``features`` (the declared user, context
and candidate features, `longseq.data.features.FeatureSpec`). Every other key (the generator's or the
converter's parameters, cut-offs, ``preset``, ``vocab`` ...) is kept, untouched, in
:attr:`DatasetMeta.extra`, so that a read-then-written ``meta.json`` loses nothing.

Errors name the file and the key: a missing file, bad JSON, a missing or ill-typed key, a
negative size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longseq.data.features import FeatureSpec, parse_features

#: The file name inside a data set folder.
META_NAME = "meta.json"

#: The format every current writer declares.
FORMAT = "longseq.request.v1"

#: Vocabulary-size keys, all required.
SIZE_KEYS: tuple[str, ...] = ("num_items", "num_categories", "num_actions")

#: Optional integer keys (absent: 0, meaning unknown).
CAP_KEYS: tuple[str, ...] = ("hist_len_max", "targets_per_request")

#: Every typed key, in the order :meth:`DatasetMeta.write` writes them (``extra`` follows).
TYPED_KEYS: tuple[str, ...] = (
    "format", "tasks", *SIZE_KEYS, *CAP_KEYS, "num_requests", "files", "features",
)  # fmt: skip


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class DatasetMeta:
    """A data set's ``meta.json``, typed.

    Attributes:
        num_items: item vocabulary size (item ids are ``0..num_items-1``).
        num_categories: category vocabulary size.
        num_actions: action vocabulary size.
        tasks: the label tasks (``tgt_<task>`` columns); empty: not listed.
        hist_len_max: the longest history the data set was written with (0: unknown).
        targets_per_request: the most targets a request holds (0: unknown).
        format: the format name (``longseq.request.v1``; empty: not stated).
        num_requests: requests per split (empty: not stated).
        files: per split, its Parquet files relative to the data set folder (empty: not stated).
        features: the declared side features (`FeatureSpec`; empty: none).
        extra: every other key of the file, as read (generator / converter parameters ...).
        source: the file it was read from ("" when built in memory); not written, not compared.
    """

    num_items: int
    num_categories: int
    num_actions: int
    tasks: tuple[str, ...] = ()
    hist_len_max: int = 0
    targets_per_request: int = 0
    format: str = ""
    num_requests: Mapping[str, int] = field(default_factory=dict)
    files: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    features: tuple[FeatureSpec, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = self.source or META_NAME
        for k in (*SIZE_KEYS, *CAP_KEYS):
            v = getattr(self, k)
            if not _is_int(v):
                raise ValueError(f"{where}: key {k!r} must be an integer, got {v!r}")
            if v < 0:
                raise ValueError(f"{where}: key {k!r} must be >= 0, got {v}")
        clash = sorted(set(self.extra) & set(TYPED_KEYS))
        if clash:
            raise ValueError(f"{where}: extra holds typed key {clash[0]!r}")

    @property
    def model_tasks(self) -> list[str]:
        """The tasks a model trained on this data set predicts: ``tasks``, or ``click``."""
        return list(self.tasks) or ["click"]

    def id_limit(self, key: str) -> int:
        """The vocabulary size ``key`` (one of ``SIZE_KEYS``): ids must be below it."""
        if key not in SIZE_KEYS:
            raise KeyError(f"{key!r} is not a vocabulary size of {META_NAME} ({SIZE_KEYS})")
        return int(getattr(self, key))

    def require_extra(self, key: str) -> Any:
        """``extra[key]``, or ``KeyError`` naming the file and the key."""
        if key not in self.extra:
            raise KeyError(f"{self.source or META_NAME}: missing key {key!r}")
        return self.extra[key]

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def file_of(path: str | Path) -> Path:
        """``path/meta.json`` when ``path`` is a folder, else ``path``."""
        p = Path(path)
        return p / META_NAME if p.is_dir() else p

    @staticmethod
    def find(path: str | Path) -> Path | None:
        """``meta.json`` in ``path`` (if a folder) or in one of its two parent folders, or None
        (a split folder or a Parquet file finds its data set's)."""
        p = Path(path).resolve()
        cands = ([p] if p.is_dir() else []) + [p.parent, p.parent.parent]
        return next((c / META_NAME for c in cands if (c / META_NAME).is_file()), None)

    @classmethod
    def near(cls, path: str | Path) -> DatasetMeta | None:
        """The meta of the data set ``path`` lies in (see :meth:`find`), or None without one."""
        f = cls.find(path)
        return cls.read(f) if f is not None else None

    @classmethod
    def read(cls, path: str | Path) -> DatasetMeta:
        """Read ``meta.json`` from a data set folder or the file itself.

        Raises:
            FileNotFoundError: no such file (named).
            ValueError: bad JSON, not an object, a missing or ill-typed key, a negative size
                (the file and the key named).
        """
        f = cls.file_of(path)
        if not f.is_file():
            raise FileNotFoundError(
                f"{f} not found: a longseq data set folder holds {META_NAME} "
                "(python -m longseq.datasets.synth and the converters write one)"
            )
        try:
            doc = json.loads(f.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from None
        return cls.from_dict(doc, str(f))

    @classmethod
    def from_dict(cls, doc: Any, source: str = "") -> DatasetMeta:
        """A meta from a parsed ``meta.json`` document (errors name ``source`` and the key)."""
        where = source or META_NAME
        if not isinstance(doc, dict):
            raise ValueError(f"{where}: must hold a JSON object, got {type(doc).__name__}")
        missing = [k for k in SIZE_KEYS if k not in doc]
        if missing:
            raise ValueError(
                f"{where}: missing key {missing[0]!r} (the vocabulary sizes "
                f"{', '.join(SIZE_KEYS)} are required)"
            )

        def bad(key: str, want: str) -> ValueError:
            return ValueError(f"{where}: key {key!r} must be {want}, got {doc[key]!r}")

        tasks = doc.get("tasks") or []
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise bad("tasks", "a list of task names")
        fmt = doc.get("format") or ""
        if not isinstance(fmt, str):
            raise bad("format", "a string")
        num_requests = doc.get("num_requests") or {}
        if not isinstance(num_requests, dict) or not all(
            _is_int(n) and n >= 0 for n in num_requests.values()
        ):
            raise bad("num_requests", "an object of split -> request count (>= 0)")
        files = doc.get("files") or {}
        if not isinstance(files, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in files.values()
        ):
            raise bad("files", "an object of split -> list of file paths")
        ints = {}
        for k in (*SIZE_KEYS, *CAP_KEYS):
            v = doc[k] if k in SIZE_KEYS else (doc.get(k) or 0)
            if not _is_int(v):
                raise bad(k, "an integer")
            if v < 0:
                raise ValueError(f"{where}: key {k!r} must be >= 0, got {v}")
            ints[k] = v
        return cls(
            **ints,
            tasks=tuple(tasks),
            format=fmt,
            num_requests=dict(num_requests),
            files={s: tuple(v) for s, v in files.items()},
            features=parse_features(doc.get("features"), where),
            extra={k: v for k, v in doc.items() if k not in TYPED_KEYS},
            source=source,
        )

    # -- writing ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The ``meta.json`` document: the typed keys (``format`` only when set), then ``extra``."""
        out: dict[str, Any] = {"format": self.format} if self.format else {}
        out["tasks"] = list(self.tasks)
        for k in (*SIZE_KEYS, *CAP_KEYS):
            out[k] = getattr(self, k)
        out["num_requests"] = dict(self.num_requests)
        out["files"] = {s: list(v) for s, v in self.files.items()}
        if self.features:
            out["features"] = [f.to_dict() for f in self.features]
        out.update(self.extra)
        return out

    def write(self, path: str | Path) -> Path:
        """Write ``meta.json`` into the folder ``path`` (or to the file ``path`` when it ends in
        ``.json``); returns the file."""
        p = Path(path)
        f = p if p.suffix == ".json" else p / META_NAME
        f.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return f
