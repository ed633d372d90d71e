"""What a data set's converter provides to the shared pipeline (:mod:`.pipeline`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from longseq.datasets.convert.csvsource import CsvSpec
from longseq.datasets.convert.features import SideFeature
from longseq.datasets.convert.options import DatasetOptions
from longseq.datasets.convert.requests import Events, Requests, TargetSet

if TYPE_CHECKING:
    from longseq.datasets.convert.config import ConvertConfig


@dataclass
class Context:
    """What pass 1 found, handed to :meth:`Converter.after_pass1`."""

    buckets: list[Path]
    item_vocab: np.ndarray
    cat_vocab: np.ndarray
    cutoffs: dict[str, int]


@dataclass
class Converter:
    """Base class: one subclass per data set.

    Subclasses set ``tasks``, ``num_actions`` and implement :meth:`inputs`, :meth:`normalize`;
    they may override :meth:`prepare` (side tables), :meth:`after_pass1` (a pass over the
    buckets, e.g. item popularity), :meth:`history_mask` and :meth:`targets`.
    """

    cfg: ConvertConfig
    tasks: list[str] = field(default_factory=list)
    num_actions: int = 1
    #: extra ``tgt_*`` int8 columns that are not tasks -> their meaning (written to meta.json)
    extra_columns: dict[str, str] = field(default_factory=dict)
    variant: str = ""
    #: input rows dropped, by reason
    dropped: dict[str, int] = field(default_factory=dict)
    #: request kinds: 0 = the main log; 1 = a separate split (KuaiRand's random log)
    request_kinds: tuple[int, ...] = (0,)
    #: side features to join (set by :meth:`prepare` when ``features`` is on)
    side_features: list[SideFeature] = field(default_factory=list)
    #: lines for the log and ``stats.json`` (``notes``), e.g. an optional file not found
    notes: list[str] = field(default_factory=list)

    @property
    def opts(self) -> DatasetOptions:
        return self.cfg.options()

    @property
    def label_names(self) -> list[str]:
        """The ``lab_<name>`` event columns written in pass 1."""
        return list(self.tasks)

    def inputs(self, src: Path) -> list[CsvSpec]:
        """The raw event files, in reading order."""
        raise NotImplementedError

    def prepare(self, src: Path) -> None:
        """Load side tables (item categories) before pass 1."""

    def normalize(
        self, batch: pa.RecordBatch, spec: CsvSpec, first_line: int, seq0: int
    ) -> pa.Table:
        """Raw rows -> events (``partition.event_schema(self.label_names)``); ``seq0`` is the
        global number of the first row."""
        raise NotImplementedError

    def after_pass1(self, ctx: Context) -> None:
        """Called once the vocabularies and split cutoffs are known."""

    def history_mask(self, ev: Events) -> np.ndarray:
        """Which events enter histories (default: all)."""
        return np.ones(len(ev), bool)

    def targets(self, reqs: Requests) -> TargetSet:
        """The targets of a bucket's requests (default: each target event, its labels)."""
        return TargetSet.from_events(reqs)

    def note(self, text: str) -> None:
        """A line for the log and ``stats.json`` (``notes``)."""
        logging.getLogger("longseq.datasets.convert").warning("%s", text)
        self.notes.append(text)

    def drop(self, reason: str, n: int) -> None:
        """Count ``n`` dropped input rows."""
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)


def find_files(src: Path, pattern: str) -> list[Path]:
    """Files under ``src`` (recursively) matching ``pattern``, sorted by name."""
    if not src.is_dir():
        raise FileNotFoundError(f"src={src}: not a folder")
    return sorted(src.rglob(pattern), key=lambda p: (p.name, str(p)))


def seq_column(seq0: int, n: int) -> pa.Array:
    """Global row numbers ``seq0 .. seq0 + n - 1``."""
    return pa.array(np.arange(seq0, seq0 + n, dtype=np.int64))
