"""A split's manifest: its files, row groups and schemas, so readers start without the footers.

``<split>/_manifest.json`` (not ``*.parquet``, so never listed as data) holds, for every Parquet
file of the split in listing order: its path relative to the split folder, its size in bytes, its
row count, the row count of each row group, the first row of the file within the split (row groups
follow from the counts) and which of the split's distinct Arrow schemas it has (serialized once).

`split_layout` is what `RequestReader` calls at start-up: with a manifest that matches the folder
(the same files; every size equal: one ``stat`` per file, no footer read) the row groups and
schemas come from it; without one, or with a stale one (a warning names the file that changed),
every footer is read once. Either way the row groups, hence every rank's rows and the resume
state, are the same. `SplitWriter.close` (the generator, the converters) writes the manifest;
``python -m longseq.data.index path=...`` writes it for data written elsewhere;
``python -m longseq.datasets.validate`` checks it against the footers (`manifest_problems`).
Sizes are the fingerprint (no mtime): a copied data set keeps a valid manifest and the generator's
output stays byte-for-byte reproducible; a file rewritten in place at the same size is caught by
``validate``, not at start-up.
"""

from __future__ import annotations

import base64
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from longseq.data.shards import RowGroup, list_parquet_files

if TYPE_CHECKING:
    from longseq.data.features import FeatureSpec

MANIFEST_NAME = "_manifest.json"
FORMAT = "longseq.manifest.v1"


class ManifestWarning(UserWarning):
    """A manifest that cannot be used (stale, unreadable): the reader reads the footers instead."""


class ManifestMismatch(ValueError):
    """A footer the reader opened disagrees with the manifest its rows were planned from."""


@dataclass
class SplitLayout:
    """What a reader needs before reading rows: files, row groups, distinct schemas.

    Attributes:
        files: the split's Parquet files (`list_parquet_files` order and spelling).
        groups: every row group of ``files``, in order.
        schemas: each distinct Arrow schema with the first file that has it.
        source: ``"manifest"`` or ``"footers"``.
    """

    files: list[str]
    groups: list[RowGroup]
    schemas: list[tuple[str, pa.Schema]]
    source: str

    def check_footer(self, path: str, footer: pq.FileMetaData, split_dir: str | Path) -> None:
        """Raise `ManifestMismatch` naming ``path`` and the row group when ``footer`` (opened by
        the reader) has other row counts than the manifest the layout came from (with layout
        ``source == "footers"`` there is nothing to compare)."""
        if self.source != "manifest":
            return
        want = [g.rows for g in self.groups if g.path == path]
        have = [footer.row_group(g).num_rows for g in range(footer.num_row_groups)]
        if have == want:
            return
        where = manifest_path(split_dir)
        bad = next((g for g, (a, b) in enumerate(zip(have, want)) if a != b), None)
        what = (f"row group {bad} has {have[bad]} rows, {where} says {want[bad]}"
                if bad is not None else f"{len(have)} row groups, {where} says {len(want)}")  # fmt: skip
        raise ManifestMismatch(
            f"{path}: {what}: the manifest does not describe this file (the rows each rank "
            f"reads were planned from it; refused). Rewrite it: python -m longseq.data.index "
            f"path={split_dir}"
        )

    def check_schemas(self, tasks: list[str], features: Sequence[FeatureSpec] = ()) -> None:
        """Raise ``ValueError`` naming the first file whose schema lacks a column or has a wrong
        type (the check `RowChecker.check_schemas` makes, once per distinct schema)."""
        from longseq.data.checks import schema_problem

        for f, schema in self.schemas:
            bad = schema_problem(schema, f, tasks, features)
            if bad:
                raise ValueError(bad)


def manifest_path(split_dir: str | Path) -> Path:
    """Where the manifest of ``split_dir`` lives."""
    return Path(split_dir) / MANIFEST_NAME


def _rel(f: str | Path, split_dir: str | Path) -> str:
    return _rels([str(f)], split_dir)[0]


def _rels(files: list[str], split_dir: str | Path) -> list[str]:
    """``files`` relative to ``split_dir``, with ``/`` (string slicing: no Path per file)."""
    prefix = os.path.join(str(Path(split_dir)), "")
    if not all(f.startswith(prefix) for f in files):  # e.g. split_dir "."
        return [Path(f).relative_to(split_dir).as_posix() for f in files]
    return [f[len(prefix) :].replace(os.sep, "/") for f in files]


def _footer(f: str | Path) -> pq.FileMetaData:
    try:
        return pq.ParquetFile(f).metadata
    except Exception as e:  # not Parquet, truncated footer, unreadable
        raise ValueError(f"{f}: cannot read as Parquet: {e}") from e


def _encode(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _decode(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _distinct(schemas: list[tuple[str, pa.Schema]], f: str, s: pa.Schema) -> None:
    if not any(s.equals(other) for _, other in schemas):
        schemas.append((f, s))


def build_manifest(
    split_dir: str | Path,
    known: dict[str, pq.FileMetaData] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The manifest of ``split_dir`` as a dict; ``known`` (path -> footer, e.g. collected by a
    writer) spares reading those footers again. Errors name the unreadable file."""
    from tqdm import tqdm

    known = {str(k): v for k, v in (known or {}).items()}
    files, schemas, first = list_parquet_files(split_dir), [], 0
    entries: list[dict[str, Any]] = []
    bar = tqdm(files, desc=f"index {split_dir}", unit="file", disable=not progress)
    for f in bar:
        md = known[f] if f in known else _footer(f)
        code = _encode(md.schema.to_arrow_schema())
        if code not in schemas:
            schemas.append(code)
        rows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        entries.append({"path": _rel(f, split_dir), "bytes": os.stat(f).st_size,
                        "rows": md.num_rows, "first_row": first, "row_groups": rows,
                        "schema": schemas.index(code)})  # fmt: skip
        first += md.num_rows
    return {"format": FORMAT, "rows": first, "files": entries, "schemas": schemas}


def write_manifest(
    split_dir: str | Path,
    known: dict[str, pq.FileMetaData] | None = None,
    progress: bool = False,
) -> Path:
    """Write ``<split_dir>/_manifest.json`` (atomically: readers never see half of it)."""
    path = manifest_path(split_dir)
    text = json.dumps(build_manifest(split_dir, known, progress), separators=(",", ":"))
    tmp = path.with_name(f"{MANIFEST_NAME}.tmp-{os.getpid()}")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest file's content; ``ValueError`` naming the file if it is not one."""
    try:
        m = json.loads(Path(path).read_text())
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise ValueError(f"format {m.get('format') if isinstance(m, dict) else m!r}")
        for e in m["files"]:
            if not isinstance(e["path"], str):
                raise ValueError(f"entry {str(e)[:80]}: 'path' is not a string")
            _check_entry(e)
            if not e["schema"] < len(m["schemas"]):
                raise ValueError(f"entry {e['path']!r}: no schema {e['schema']}")
            if sum(e["row_groups"]) != e["rows"]:
                raise ValueError(f"entry {e['path']!r}: row groups do not add up to 'rows'")
        for text in m["schemas"]:
            _decode(text)  # base64 and Arrow errors are ValueErrors
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: not a {FORMAT} manifest ({type(e).__name__}: {e})") from e
    return m


def _is_count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _check_entry(e: dict[str, Any]) -> None:
    """Every number of a manifest entry is an integer >= 0 (not a string, float or bool)."""
    for key in ("bytes", "rows", "first_row", "schema"):
        if not _is_count(e[key]):
            raise ValueError(
                f"entry {e['path'][:80]!r}: {key!r} must be an integer >= 0, got {str(e[key])[:40]!r}"
            )
    groups = e["row_groups"]
    if not isinstance(groups, list) or not all(_is_count(n) for n in groups):
        raise ValueError(f"entry {e['path'][:80]!r}: 'row_groups' must be a list of integers >= 0")


def stale_reason(m: dict[str, Any], split_dir: str | Path, files: list[str]) -> str | None:
    """Why manifest ``m`` does not describe ``files`` of ``split_dir`` (None: it does)."""
    listed = {e["path"]: e for e in m["files"]}
    have = _rels(files, split_dir)
    if set(listed) != set(have):
        new, gone = sorted(set(have) - set(listed)), sorted(set(listed) - set(have))
        return f"files differ (not listed: {new[:3] or 'none'}; missing: {gone[:3] or 'none'})"
    for f, rel in zip(files, have, strict=True):
        size = os.stat(f).st_size
        if size != int(listed[rel]["bytes"]):
            return f"{f} has {size} bytes, the manifest says {listed[rel]['bytes']}"
    return None


def _from_footers(files: list[str]) -> SplitLayout:
    groups: list[RowGroup] = []
    schemas: list[tuple[str, pa.Schema]] = []
    for f in files:
        md = _footer(f)
        groups += [RowGroup(f, g, md.row_group(g).num_rows) for g in range(md.num_row_groups)]
        _distinct(schemas, f, md.schema.to_arrow_schema())
    return SplitLayout(files, groups, schemas, "footers")


def split_layout(split_dir: str | Path, use_manifest: bool = True) -> SplitLayout:
    """Files, row groups and schemas of ``split_dir``: from its manifest when it matches the
    folder, else (with a `ManifestWarning` saying why, if there is one) from every footer."""
    files = list_parquet_files(split_dir)
    path = manifest_path(split_dir)
    if not use_manifest or not path.is_file():
        return _from_footers(files)
    try:
        m = read_manifest(path)
        why = stale_reason(m, split_dir, files)
    except (ValueError, OSError) as e:  # OSError: a file removed since the listing
        why = str(e)
    if why is not None:
        warnings.warn(
            f"{path}: stale or unreadable, reading every Parquet footer instead: {why} "
            f"(python -m longseq.data.index path={split_dir} rewrites it)",
            ManifestWarning,
            stacklevel=2,
        )
        return _from_footers(files)
    listed = {e["path"]: e for e in m["files"]}
    groups: list[RowGroup] = []
    first: dict[int, str] = {}  # schema index -> first file with it
    for f, rel in zip(files, _rels(files, split_dir), strict=True):
        e = listed[rel]
        groups += [RowGroup(f, g, int(n)) for g, n in enumerate(e["row_groups"])]
        first.setdefault(int(e["schema"]), f)
    schemas: list[tuple[str, pa.Schema]] = []
    for i, f in first.items():
        _distinct(schemas, f, _decode(m["schemas"][i]))
    return SplitLayout(files, groups, schemas, "manifest")


def manifest_problems(split_dir: str | Path) -> list[str]:
    """How ``<split_dir>/_manifest.json`` disagrees with the files and their footers (files,
    sizes, row counts per row group, schemas); each message names the file. [] if it agrees."""
    path = manifest_path(split_dir)
    try:
        m = read_manifest(path)
        files = list_parquet_files(split_dir)
    except (ValueError, FileNotFoundError) as e:
        return [str(e)]
    why = stale_reason(m, split_dir, files)
    out = [f"{path}: {why}"] if why and why.startswith("files differ") else []
    listed = {e["path"]: e for e in m["files"]}
    for f in files:
        e = listed.get(_rel(f, split_dir))
        if e is None:
            continue
        try:
            md = _footer(f)
        except ValueError as err:
            out.append(str(err))
            continue
        size = os.stat(f).st_size
        if size != int(e["bytes"]):
            out.append(f"{f}: {size} bytes, {path} says {e['bytes']}")
        rows = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
        if rows != list(e["row_groups"]):
            bad = next((g for g, (a, b) in enumerate(zip(rows, e["row_groups"])) if a != b), None)
            what = (f"row group {bad} has {rows[bad]} rows, {path} says {e['row_groups'][bad]}"
                    if bad is not None else
                    f"{len(rows)} row groups, {path} says {len(e['row_groups'])}")  # fmt: skip
            out.append(f"{f}: {what}")
        if not md.schema.to_arrow_schema().equals(_decode(m["schemas"][e["schema"]])):
            out.append(f"{f}: schema differs from the one {path} records")
    return out
