"""Typed configs of the benchmark CLIs, on Hydra like every other entry point.

``python -m longseq.bench``: primary config ``configs/bench.yaml``, schema
`longseq.bench.common.BenchArgs` (registered as ``bench_schema``). ``python -m
longseq.bench.report``: ``configs/bench_report.yaml``, schema `ReportConfig` (``bench_report_schema``).
Command lines stay ``key=value``; an unknown key or a value of the wrong type is Hydra's error,
a value outside the choices a `BenchError` naming the key (exit status 2).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from longseq.bench.common import BenchArgs, BenchError


@dataclass
class ReportConfig:
    """``python -m longseq.bench.report``: regenerate the benchmark page.

    Attributes:
        results: folder whose sub-folders (``cpu/``, ``gpu/``) hold ``<suite>.json`` files.
        doc: the markdown page to write.
        img: folder for the figures; empty: ``img/`` next to ``doc``.
    """

    results: str = "benchmarks/results"
    doc: str = "docs/benchmarks.md"
    img: str = ""


#: primary config name -> schema
SCHEMAS: dict[str, type] = {"bench": BenchArgs, "bench_report": ReportConfig}


def register() -> None:
    """Register ``bench_schema`` and ``bench_report_schema`` with Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    for name, node in SCHEMAS.items():
        ConfigStore.instance().store(name=f"{name}_schema", node=node)


def _checked(conf: Any) -> Any:
    if isinstance(conf, BenchArgs):
        conf.validate()
    return conf


def compose_config(name: str, overrides: list[str]) -> Any:
    """The typed, checked config ``name`` with ``key=value`` overrides, without running an app
    (tests, scripts). Raises `BenchError` with Hydra's message, which names the key."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from longseq.config import CONFIG_DIR

    register()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            conf = OmegaConf.to_object(compose(name, overrides=list(overrides)))
    except Exception as e:  # noqa: BLE001 - Hydra/OmegaConf errors: parse, unknown key, type
        cause = f": {e.__cause__}" if e.__cause__ else ""
        raise BenchError(" ".join(f"{e}{cause}".split())) from None
    return _checked(conf)


def hydra_main(name: str, fn: Callable[[Any], int]) -> None:
    """Run ``fn(typed config)`` as the Hydra app of primary config ``name``; exit with its
    status (2 on a `BenchError`)."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from longseq.config import CONFIG_DIR

    register()

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=name)
    def app(cfg: DictConfig) -> None:
        try:
            conf = _checked(OmegaConf.to_object(cfg))
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        status = fn(conf)
        if status:
            sys.exit(status)

    app()


def parse_args(argv: list[str]) -> BenchArgs:
    """`BenchArgs` from ``key=value`` arguments (Hydra overrides of ``configs/bench.yaml``);
    `BenchError` names any bad key or value."""
    return compose_config("bench", argv)
