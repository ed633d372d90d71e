"""Out-of-core converters of public logs to the request-level Parquet format.

    python -m longseq.datasets.convert dataset=<kuairand|taobao|movielens> src=<raw dir> out=<dir>

Data sets: KuaiRand (1K, 27K, Pure), Taobao UserBehavior, MovieLens (100K, 1M, 10M, 20M, 25M,
32M). Rules, commands and expected numbers: ``docs/datasets.md``. Pipeline (shared): the raw
CSV is streamed in blocks and hash-partitioned by user into bucket files (pass 1), then each
bucket is grouped into requests with their histories and targets and written per split (pass
2); ``meta.json`` (vocabulary sizes, tasks) and ``stats.json`` complete the output.
"""

from __future__ import annotations

from typing import Any

from longseq.datasets.convert.config import ConvertConfig


def converter_for(cfg: ConvertConfig):
    """The converter of ``cfg.dataset``."""
    from longseq.datasets.convert.kuairand import KuaiRandConverter
    from longseq.datasets.convert.movielens import MovieLensConverter
    from longseq.datasets.convert.taobao import TaobaoConverter

    classes = {
        "kuairand": KuaiRandConverter,
        "taobao": TaobaoConverter,
        "movielens": MovieLensConverter,
    }
    cfg.options()  # names the key if the data set is unknown
    return classes[cfg.dataset](cfg)


def run_conversion(cfg: ConvertConfig) -> dict[str, Any]:
    """Convert ``cfg.src`` into ``cfg.out``; return the statistics written to ``stats.json``."""
    from longseq.datasets.convert.pipeline import convert

    cfg.validate()
    return convert(cfg, converter_for(cfg))


__all__ = ["ConvertConfig", "converter_for", "run_conversion"]
