"""Validate request-level Parquet files without modifying them.

    python -m longseq.datasets.validate path=<data set, split folder or file> [max_errors=N]

Every row group of every file is checked with :func:`longseq.data.format.validate_table` (schema,
nulls, parallel list lengths, history order, ``hist_ts < request_ts``, labels in {0, 1}, non-empty
targets) and, here, for id ranges: ids must be >= 0 and, when the data set's ``meta.json`` is found
(in ``path``, or up to two folders above it, i.e. next to the split folders), below its
``num_items`` / ``num_categories`` / ``num_actions``; every task listed in ``meta.json`` must have
its ``tgt_<task>`` column. Exit status 0 with a summary (files, requests, targets) when valid; 1
with a message naming file, row group, row (and ``request_id``) and column otherwise. With
``max_errors=1`` (default) the scan stops at the first problem; with ``max_errors=N`` it scans
everything, prints up to N problems and counts all of them (one per row, column and check).
Every split's ``_manifest.json`` (`longseq.data.manifest`; optional) is checked against the files:
the same files and sizes, the row count of every row group, the schemas; a mismatch names the file
(``python -m longseq.data.index path=...`` rewrites a stale manifest).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from omegaconf import MISSING

from longseq.data.checks import (
    id_limits,
    id_problems,
    list_lengths,
    problem_message,
    row_problems,
    schema_problem,
)
from longseq.data.feature_checks import feature_problems
from longseq.data.features import FeatureSpec
from longseq.data.format import dataset_files, validate_table
from longseq.data.manifest import MANIFEST_NAME, manifest_problems
from longseq.data.meta import META_NAME, SIZE_KEYS, DatasetMeta


@dataclass
class ValidateConfig:
    """Config of ``python -m longseq.datasets.validate`` (registered as ``validate_schema``).

    Attributes:
        path: a data set folder, a split folder or one Parquet file.
        max_errors: problems to print; 1 stops at the first, N > 1 scans all and counts them.
        meta: the data set's ``meta.json``; empty: looked up from ``path``.
        progress: tqdm bar over files on stderr.
    """

    path: str = MISSING
    max_errors: int = 1
    meta: str = ""
    progress: bool = True


@dataclass
class Report:
    """Outcome of :func:`validate_path`."""

    path: str
    meta: str | None
    files: int = 0
    row_groups: int = 0
    requests: int = 0
    targets: int = 0
    manifests: int = 0  #: ``_manifest.json`` files checked
    num_problems: int = 0
    problems: list[str] = field(default_factory=list)  #: the first ``max_errors`` messages
    stopped_early: bool = False

    @property
    def ok(self) -> bool:
        return self.num_problems == 0

    def summary(self) -> str:
        """One-paragraph human-readable outcome."""
        ids = f"ids checked against {self.meta}" if self.meta else "no meta.json: ids only >= 0"
        counts = (
            f"{self.files} files, {self.row_groups} row groups, {self.requests:,} requests, "
            f"{self.targets:,} targets, {self.manifests} manifest(s)"
        )
        if self.ok:
            return f"OK {self.path}: {counts} ({ids})"
        head = (
            "INVALID: first problem (stopped; max_errors=N lists and counts all)"
            if self.stopped_early
            else f"INVALID: {self.num_problems} problem(s), first {len(self.problems)} shown"
        )
        return "\n".join([head, *self.problems, f"scanned {counts} ({ids})"])


def _check_file(
    f: Path,
    rep: Report,
    limits: dict[str, int],
    tasks: list[str],
    stop: bool,
    features: tuple[FeatureSpec, ...] = (),
) -> Iterator[str]:
    """Yield the problems of one file, updating the counts in ``rep``."""
    try:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
    except Exception as e:  # not Parquet, truncated footer, ...
        yield f"{f}: cannot read as Parquet: {e}"
        return
    bad = schema_problem(schema, str(f), tasks, features)
    if bad:
        yield bad
        return
    for g in range(pf.num_row_groups):
        source = f"{f} (row group {g})"
        try:
            table = pf.read_row_group(g)
        except Exception as e:
            yield f"{source}: cannot read row group: {e}"
            continue
        rep.row_groups += 1
        rep.requests += table.num_rows
        rep.targets += int(list_lengths(table.column("tgt_item_id")).sum())
        if stop:  # the first problem, with format.validate_table's own message
            try:
                validate_table(table, source)
            except ValueError as e:
                yield str(e)
                return
        if stop:
            found = id_problems(table, limits) + feature_problems(table, features)
        else:
            found = row_problems(table, limits, features)
        for row, column, what in found:
            yield problem_message(source, table, row, column, what)


def dataset_problems(root: Path, meta_file: Path | None, meta: DatasetMeta | None) -> list[str]:
    """Problems of a data set folder as a whole: ``meta.json`` missing, no ``train/`` split,
    files or row counts that disagree with ``meta.json`` (``meta``: the parsed ``meta_file``;
    None when it could not be read, a problem reported by the caller)."""
    if meta_file is None or meta_file.parent != root:
        return [
            f"{root / META_NAME}: missing; the trainer needs it with the keys "
            f"{', '.join(SIZE_KEYS)} (and 'tasks'); longseq.datasets.synth and the converters "
            "write it"
        ]
    out = []
    if not (root / "train").is_dir():
        out.append(f"{root / 'train'}: does not exist (the trainer reads data.split=train)")
    if meta is None:
        return out
    for split, listed in meta.files.items():
        have = sorted(str(f.relative_to(root)) for f in (root / split).rglob("*.parquet"))
        if sorted(listed) != have:
            gone, extra = sorted(set(listed) - set(have)), sorted(set(have) - set(listed))
            out.append(
                f"{root / split}: files differ from {meta_file} (missing: {gone or 'none'}; "
                f"not listed: {extra or 'none'})"
            )
    for split, n in meta.num_requests.items():
        files = sorted((root / split).rglob("*.parquet"))
        try:
            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        except Exception:  # noqa: BLE001 - the per-file scan names the unreadable file
            continue
        if rows != int(n):
            out.append(f"{root / split}: {rows} requests, {meta_file} says {n} (num_requests)")
    return out


def _is_dataset_root(p: Path) -> bool:
    return p.is_dir() and (
        (p / META_NAME).is_file() or any((p / s).is_dir() for s in ("train", "test", "valid"))
    )


def validate_path(
    path: str | Path, max_errors: int = 1, meta: str | Path | None = None, progress: bool = False
) -> Report:
    """Validate every Parquet file under ``path``; never writes anything."""
    from tqdm import tqdm

    if not Path(path).exists():
        raise FileNotFoundError(f"path={path}: does not exist")
    meta_file = DatasetMeta.file_of(meta) if meta else DatasetMeta.find(path)
    rep = Report(str(path), str(meta_file) if meta_file else None)
    info: DatasetMeta | None = None
    if meta_file is not None:
        try:  # a missing explicit meta= raises FileNotFoundError; a bad one is a problem
            info = DatasetMeta.read(meta_file)
        except ValueError as e:
            rep.num_problems += 1
            rep.problems.append(str(e))
    if _is_dataset_root(Path(path)):  # a whole data set: its layout and meta.json too
        for msg in dataset_problems(Path(path), meta_file, info):
            rep.num_problems += 1
            rep.problems.append(msg)
    files = dataset_files(path)
    limits, tasks = id_limits(info), list(info.tasks) if info is not None else []
    stop = max_errors <= 1
    if rep.problems and stop:
        rep.stopped_early = True
        return rep
    bar = tqdm(files, desc="validate", unit="file", file=sys.stderr, disable=not progress)
    for f in bar:
        rep.files += 1
        feats = info.features if info is not None else ()
        _add(rep, _check_file(f, rep, limits, tasks, stop, feats), max_errors)
        bar.set_postfix(problems=rep.num_problems)
        if rep.stopped_early:
            break
    bar.close()
    manifests = sorted(Path(path).rglob(MANIFEST_NAME)) if Path(path).is_dir() else []
    for m in manifests if not rep.stopped_early else []:  # after the rows: the lesser problem
        rep.manifests += 1
        _add(rep, iter(manifest_problems(m.parent)), max_errors)
        if rep.stopped_early:
            break
    return rep


def _add(rep: Report, found: Iterator[str], max_errors: int) -> None:
    """Count and keep the problems in ``found`` (only the first with ``max_errors=1``)."""
    for msg in found:
        rep.num_problems += 1
        if len(rep.problems) < max(max_errors, 1):
            rep.problems.append(msg)
        if max_errors <= 1:
            rep.stopped_early = True
            return


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="validate_schema", node=ValidateConfig)


def _main() -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from longseq.config import CONFIG_DIR

    _register()

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="validate")
    def run(cfg: DictConfig) -> None:
        conf = OmegaConf.to_object(cfg)
        assert isinstance(conf, ValidateConfig)
        try:
            rep = validate_path(conf.path, conf.max_errors, conf.meta or None, conf.progress)
        except (ValueError, FileNotFoundError) as e:
            print(f"validate: {e}", file=sys.stderr)
            sys.exit(2)
        print(rep.summary(), file=sys.stdout if rep.ok else sys.stderr, flush=True)
        if not rep.ok:
            sys.exit(1)

    run()


if __name__ == "__main__":
    _main()
