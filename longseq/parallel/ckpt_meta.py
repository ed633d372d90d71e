"""A checkpoint's ``longseq.json`` read as plain data, its keys checked, errors naming them.

``longseq.json`` describes the model, tables and tasks a checkpoint was written with, and its
manifest (every file's size). Its ``model`` entry is later merged into the typed model config
with OmegaConf, which would *resolve* an interpolation such as ``${oc.env:SECRET}`` (and then
quote the secret in an error): every string and key holding ``${`` is refused here, before
anything else reads the file. The keys every loader uses are checked for type and range
(`check_meta`), so a crafted or damaged file fails with its path and key, not a ``TypeError``
deep inside the model constructor. The file must be a real file (not a symbolic link) of at most
`MAX_BYTES`.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from longseq.model.embeddings import TableSizes
from longseq.parallel.metadata_schema import plain_name
from longseq.parallel.untrusted import excerpt, read_text_no_follow, refuse_symlink

#: Largest ``longseq.json`` read (its manifest lists one line per checkpoint file).
MAX_BYTES = 64 << 20
#: The table-size keys ``tables`` may hold (the fields of `TableSizes`).
TABLE_KEYS = tuple(f.name for f in fields(TableSizes))
_REQUIRED_TABLES = tuple(
    f.name for f in fields(TableSizes) if f.default is MISSING and f.default_factory is MISSING
)


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``longseq.json``, parsed as plain JSON and checked (`check_meta`), with
    errors that name the file and key."""
    f = Path(path) / "longseq.json"
    refuse_symlink(f, "a checkpoint's longseq.json")
    if not f.is_file():
        raise FileNotFoundError(f"{path} is not a complete longseq checkpoint (no longseq.json)")
    try:
        meta = json.loads(read_text_no_follow(f, MAX_BYTES))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f}: truncated or corrupt ({type(e).__name__} at {_where(e)})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{f}: not a JSON object")
    check_meta(meta, f)
    return meta


def _where(e: Exception) -> str:
    return f"char {getattr(e, 'pos', getattr(e, 'start', '?'))}"


def _is_int(v: Any) -> bool:
    return type(v) is int


def check_meta(meta: dict[str, Any], source: str | Path) -> None:
    """Raise ``ValueError`` naming ``source`` and the key for an interpolation anywhere, or a
    ``step``, ``tables``, ``tasks``, ``model`` or ``manifest`` entry of the wrong type or range
    (absent entries are not checked: older checkpoints lack some)."""
    _no_interpolation(meta, "", source)
    if "step" in meta and not (_is_int(meta["step"]) and meta["step"] >= 0):
        raise ValueError(
            f"{source}: step must be an integer >= 0, got {excerpt(str(meta['step']))}"
        )
    if "model" in meta and not isinstance(meta["model"], dict):
        raise ValueError(f"{source}: model must be an object (the model config)")
    tasks = meta.get("tasks", [])
    if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
        raise ValueError(f"{source}: tasks must be a list of names")
    if "tables" in meta:
        _check_tables(meta["tables"], source)
    if "features" in meta:
        from longseq.data.features import parse_features

        parse_features(meta["features"], f"{source}")
    manifest = meta.get("manifest") or {}
    if not isinstance(manifest, dict):
        raise ValueError(f"{source}: manifest must be an object of file name -> size")
    for name, size in manifest.items():
        if not plain_name(name) or name == "longseq.json":
            raise ValueError(
                f"{source}: manifest: {excerpt(name)} is not a file name of the folder"
            )
        if not _is_int(size) or size < 0:
            raise ValueError(
                f"{source}: manifest.{name}: size {excerpt(repr(size))[1:-1]} is not an integer "
                "number of bytes >= 0"
            )


def _check_tables(tables: Any, source: str | Path) -> None:
    if not isinstance(tables, dict):
        raise ValueError(f"{source}: tables must be an object of table sizes {TABLE_KEYS}")
    for key, value in tables.items():
        if key not in TABLE_KEYS:
            raise ValueError(
                f"{source}: tables.{excerpt(key)[1:-1]}: not a table size (known: "
                f"{', '.join(TABLE_KEYS)})"
            )
        if not _is_int(value) or value < 1:
            raise ValueError(
                f"{source}: tables.{key} must be an integer >= 1, got {excerpt(repr(value))}"
            )
    missing = [k for k in _REQUIRED_TABLES if k not in tables]
    if missing:
        raise ValueError(f"{source}: tables lacks {', '.join(missing)}")


def _no_interpolation(value: Any, key: str, source: str | Path, depth: int = 0) -> None:
    """Refuse ``${`` in any string or key (OmegaConf would resolve it)."""
    if depth > 64:
        raise ValueError(f"{source}: nested deeper than 64 levels at {key or 'the top'}")
    if isinstance(value, str) and "${" in value:
        raise ValueError(
            f"{source}: {key or 'a value'} holds an OmegaConf interpolation ('${{...}}'): "
            "longseq.json is plain data and never resolved (the checkpoint was crafted or "
            "edited; refused)"
        )
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{key}.{k}" if key else str(k)
            if "${" in str(k):
                _no_interpolation(str(k), key or "a key", source)
            _no_interpolation(v, excerpt(sub, 80)[1:-1], source, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_interpolation(v, f"{key}[{i}]", source, depth + 1)
