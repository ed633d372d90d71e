"""``python -m longseq.report inputs=[<run or eval dirs>] out=<dir> [labels=[...]] [ignore=[...]]``.

Writes ``<out>/report.md`` (printed on stdout too), ``<out>/report.json`` and ``<out>/report.png``;
see :mod:`longseq.report.compare`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from longseq.config import CONFIG_DIR


@dataclass
class ReportConfig:
    """Config of ``python -m longseq.report`` (registered as ``report_schema``).

    Attributes:
        inputs: run folders, eval folders or ``eval.json`` files.
        out: output folder.
        labels: one label per input (default: the folder names).
        ignore: extra config keys (fnmatch patterns) left out of the difference table.
        plot: also write ``report.png``.
    """

    inputs: list[str] = field(default_factory=list)
    out: str = MISSING
    labels: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    plot: bool = True


ConfigStore.instance().store(name="report_schema", node=ReportConfig)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="report")
def main(cfg: DictConfig) -> None:
    from longseq.report.compare import write_report

    conf = OmegaConf.to_object(cfg)
    assert isinstance(conf, ReportConfig)
    if not conf.inputs:
        print("report: inputs=[<run or eval dir>, ...] is required", file=sys.stderr)
        sys.exit(2)
    try:
        _, md = write_report(conf.inputs, conf.out, conf.labels or None, conf.ignore, conf.plot)
    except (FileNotFoundError, ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"report: {e}", file=sys.stderr)
        sys.exit(2)
    print(md, end="", flush=True)


if __name__ == "__main__":
    main()
