"""What the trainer shows while it runs (rank 0): a progress bar on a terminal, plain log lines
elsewhere, the start-up summary and the closing line.

On a terminal (stderr is a TTY) with ``trainer.progress=true`` a tqdm bar updates every step.
Otherwise (Slurm, stderr redirected to a file, ``trainer.progress=false``) the trainer logs one
line per ``trainer.log_every`` steps: ``step 20/200 loss 0.6931 targets/s 1234 eta 0:01:23``.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any

from tqdm import tqdm

from longseq.data.meta import DatasetMeta
from longseq.log import get_logger

log = get_logger("longseq.train")


class Progress:
    """The bar or the log lines (only on rank 0: ``enabled``)."""

    def __init__(self, start: int, max_steps: int, enabled: bool, bar: bool) -> None:
        self.start, self.max_steps, self.enabled = start, max_steps, enabled
        self.t0 = time.perf_counter()
        use_bar = enabled and bar and sys.stderr.isatty()
        self.bar = tqdm(
            total=max_steps,
            initial=start,
            disable=not use_bar,
            desc="train",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
        )
        self.lines = enabled and not use_bar

    def update(self) -> None:
        """One step done."""
        self.bar.update(1)

    def logged(self, step: int, values: dict[str, Any]) -> None:
        """The values logged at ``step``: the bar's postfix, or one log line."""
        self.bar.set_postfix(loss=f"{values['loss']:.4f}")
        if not self.lines:
            return
        rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        eta = datetime.timedelta(seconds=round((self.max_steps - step) / max(rate, 1e-9)))
        log.info(
            f"step {step}/{self.max_steps} loss {values['loss']:.4f} "
            f"targets/s {values['targets_per_s']:.0f} eta {eta}"
        )

    def close(self) -> None:
        self.bar.close()


def _count(n: int) -> str:
    return f"{n:,}"


def param_counts(model: Any) -> tuple[int, int]:
    """(dense, sparse) parameter counts of an unsharded model (the meta-device one is fine);
    sparse = the embedding collection's rows x dim."""
    dense = sparse = 0
    for name, p in model.named_parameters():
        if name.startswith("ec.") or ".ec." in name:
            sparse += p.numel()
        else:
            dense += p.numel()
    return dense, sparse


def startup_summary(
    cfg: Any, env: Any, meta: DatasetMeta, sizes: Any, params: tuple[int, int], start: int
) -> str:
    """The start-up lines: world, device, data, tables and sharding, parameter counts."""
    split_rows = meta.num_requests.get(cfg.data.split)
    dense, sparse = params
    plan = (
        "TorchRec planner"
        if cfg.sharding.planner
        else ", ".join(f"{t}={k}" for t, k in sorted(cfg.sharding.tables.items()))
        + " (other tables table_wise)"
    )
    data = f"{cfg.data.path} (split {cfg.data.split}"
    data += f", {_count(int(split_rows))} requests)" if split_rows is not None else ")"
    return "\n".join(
        [
            f"training {cfg.name}: world size {env.world_size}, device {env.device}, "
            f"steps {start}->{cfg.trainer.max_steps}, run dir {cfg.run_dir}",
            f"  data: {data}, tasks {', '.join(meta.model_tasks)}",
            f"  tables: items {_count(sizes.num_items)}, categories "
            f"{_count(sizes.num_categories)}, actions {_count(sizes.num_actions)}; sharding "
            f"{plan}, dense {cfg.sharding.dense}, sparse optimizer {cfg.sharding.sparse_optimizer}",
            f"  parameters: dense {_count(dense)}, sparse (embedding rows x dim) {_count(sparse)}",
        ]
    )
