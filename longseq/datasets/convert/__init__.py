"""Out-of-core converters of public logs to the request-level Parquet format.

    python -m longseq.datasets.convert dataset=<name> src=<raw dir> out=<dir>

Data sets (``dataset=``, registered in `longseq.datasets.convert.registry`): ``kuairand``
(KuaiRand 1K, 27K, Pure), ``taobao`` (Taobao UserBehavior), ``movielens`` (MovieLens 100K, 1M,
10M, 20M, 25M, 32M), ``recbole`` (RecBole atomic files, e.g. MovieLens-100K as shipped in the
``recbole`` wheel: ``benchmarks/fetch_movielens.sh``). Rules, commands and expected numbers:
``docs/datasets.md``. Pipeline (shared): the raw CSV is streamed in blocks and hash-partitioned
by user into bucket files (pass 1), then each bucket is grouped into requests with their
histories and targets and written per split (pass 2); ``meta.json`` (vocabulary sizes, tasks)
and ``stats.json`` complete the output.
"""

from __future__ import annotations

from typing import Any

from longseq.datasets.convert.config import ConvertConfig
from longseq.datasets.convert.registry import converter_module


def converter_for(cfg: ConvertConfig):
    """The converter of ``cfg.dataset`` (`longseq.datasets.convert.registry`)."""
    return converter_module(cfg.dataset).Converter(cfg)


def run_conversion(cfg: ConvertConfig) -> dict[str, Any]:
    """Convert ``cfg.src`` into ``cfg.out``; return the statistics written to ``stats.json``."""
    from longseq.datasets.convert.pipeline import convert

    cfg.validate()
    return convert(cfg, converter_for(cfg))


__all__ = ["ConvertConfig", "converter_for", "run_conversion"]
