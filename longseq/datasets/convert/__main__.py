"""``python -m longseq.datasets.convert dataset=<name> src=<raw dir> out=<dir> [key=value ...]``.

Hydra entry point (primary config ``configs/convert.yaml``, schema
:class:`longseq.datasets.convert.config.ConvertConfig`). Prints a summary; exit status 2 with a
message naming the file (and line) on a missing or malformed input.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def format_summary(stats: dict[str, Any]) -> str:
    """A short human-readable summary of a conversion's ``stats.json``."""
    lines = [
        f"converted {stats['dataset']} ({stats['variant']}): {stats['input']['rows']:,} rows, "
        f"{stats['items']:,} items, {stats['categories']:,} categories, "
        f"{stats['run']['seconds']:.1f}s, peak RSS {stats['run']['peak_rss_mb']:.0f} MB"
    ]
    for name, s in stats["splits"].items():
        h, t = s["history_length"], s["targets_per_request"]
        lines.append(
            f"  {name}: {s['requests']:,} requests, {s['users']:,} users, {s['targets']:,} "
            f"targets (mean {t['mean']}/request), history mean {h['mean']} p50 {h['p50']} "
            f"max {h['p100']}, label rates {json.dumps(s['label_rates'])}"
        )
    return "\n".join(lines)


def _main() -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from longseq.config import CONFIG_DIR
    from longseq.datasets.convert import run_conversion
    from longseq.datasets.convert.config import ConvertConfig, register

    register()

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="convert")
    def run(cfg: DictConfig) -> None:
        conf = OmegaConf.to_object(cfg)
        assert isinstance(conf, ConvertConfig)
        try:
            stats = run_conversion(conf)
        except (ValueError, FileNotFoundError) as e:
            print(f"convert: {e}", file=sys.stderr)
            sys.exit(2)
        print(format_summary(stats), flush=True)

    run()


if __name__ == "__main__":
    _main()
