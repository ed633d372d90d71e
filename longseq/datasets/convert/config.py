"""Typed configs of ``python -m longseq.datasets.convert`` (registered as ``convert_schema``).

Options shared by every data set live in `longseq.datasets.convert.options.DatasetOptions`;
each registered data set (`longseq.datasets.convert.registry`) adds its own section (``kuairand``,
``taobao``, ``movielens``, ``recbole``: its module's ``Options``, a subclass whose *defaults*
differ), so ``dataset=kuairand`` alone gives the documented reference conversion and any field
can be overridden on the command line, e.g. ``kuairand.gap_s=300 kuairand.sample.train=0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass

from omegaconf import MISSING

from longseq.datasets.convert.options import SPLITS, DatasetOptions, SampleConfig, SplitConfig
from longseq.datasets.convert.registry import converter_module, dataset_names

__all__ = [
    "SPLITS",
    "ConvertBase",
    "ConvertConfig",
    "DatasetOptions",
    "SampleConfig",
    "SplitConfig",
    "register",
]


@dataclass
class ConvertBase:
    """``python -m longseq.datasets.convert dataset=<name> src=<raw dir> out=<dir> [options]``:
    the fields every conversion has (`ConvertConfig` adds one section per data set).

    Attributes:
        dataset: a name registered in `longseq.datasets.convert.registry.CONVERTERS`.
        src: folder of the files as published (searched recursively).
        out: output folder (``train/``, ``valid/``, ``test/`` [, ``test_random/``],
            ``meta.json``, ``stats.json``, ``vocab/``).
        seed: request sampling and negative sampling.
        bucket_mb: raw input bytes per user bucket (sets the number of buckets, i.e. memory).
        block_mb: CSV block read at a time.
        hist_chunk_events: history events gathered at a time when writing a bucket.
        tmp: folder for the bucket files (default ``<out>/_buckets``), removed at the end
            unless ``keep_tmp``.
    """

    dataset: str = MISSING
    src: str = MISSING
    out: str = MISSING
    seed: int = 0
    bucket_mb: float = 64.0
    block_mb: float = 16.0
    hist_chunk_events: int = 1_000_000
    row_group_size: int = 128
    rows_per_file: int = 50_000
    compression: str = "zstd"
    tmp: str = ""
    keep_tmp: bool = False
    progress: bool = True

    def options(self) -> DatasetOptions:
        """The selected data set's section."""
        converter_module(self.dataset)  # names the key if the data set is unknown
        return getattr(self, self.dataset)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending key."""
        checks = self.options().checks(self.dataset) + [
            ("bucket_mb", self.bucket_mb > 0, "> 0"),
            ("block_mb", self.block_mb * 2**20 >= 256, ">= 256 bytes"),
            ("hist_chunk_events", self.hist_chunk_events >= 1, ">= 1"),
            ("row_group_size", self.row_group_size >= 1, ">= 1"),
            ("rows_per_file", self.rows_per_file >= 1, ">= 1"),
        ]
        for key, ok, want in checks:
            if not ok:
                raise ValueError(f"convert config: {key} must be {want}")


def _with_sections() -> type[ConvertBase]:
    """`ConvertBase` plus one section per registered data set (its ``Options``, defaults and
    all), so that ``kuairand.gap_s=300`` is a typed override."""
    sections = []
    for name in dataset_names():
        opts = converter_module(name).Options
        sections.append((name, opts, field(default_factory=opts)))
    cls = make_dataclass("ConvertConfig", sections, bases=(ConvertBase,))
    cls.__module__ = __name__
    cls.__doc__ = ConvertBase.__doc__
    return cls


#: the typed config of a conversion: `ConvertBase` + a section per registered data set
ConvertConfig = _with_sections()


def register() -> None:
    """Register ``convert_schema`` with Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="convert_schema", node=ConvertConfig)
