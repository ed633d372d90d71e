"""Run logging: ``metrics.jsonl`` (one JSON object per logged step), optional wandb, progress."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends metrics to ``<run_dir>/metrics.jsonl`` on rank 0 and mirrors them to wandb.

    wandb is used only when ``mode`` is ``offline`` or ``online``; its files go to
    ``<run_dir>/wandb``. A resumed run passes the previous run id to continue the same run.
    """

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool,
        wandb_mode: str = "disabled",
        project: str = "longseq",
        entity: str | None = None,
        run_id: str | None = None,
        config: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._wandb = None
        self.run_id = run_id
        if enabled and wandb_mode not in ("disabled", "", None):
            if wandb_mode not in ("offline", "online"):
                raise ValueError(f"wandb.mode must be disabled|offline|online, got {wandb_mode!r}")
            import wandb  # imported only when asked for: it is slow to import

            os.environ.setdefault("WANDB_SILENT", "true")
            run = wandb.init(
                project=project,
                entity=entity,
                mode=wandb_mode,
                dir=str(run_dir),
                id=run_id,
                resume="allow",
                config=config,
                name=name,
            )
            self._wandb, self.run_id = run, run.id

    def drop_after(self, step: int) -> int:
        """Remove the rows of steps after ``step`` (a resumed run logs them again; also drops a
        line cut short by a crash). Rank 0 only; returns the number of rows removed."""
        if not self.enabled or not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                row_step = int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                dropped += 1
                continue
            if row_step > step:
                dropped += 1
            else:
                kept.append(line + "\n")
        if dropped:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(kept))
            os.replace(tmp, self.path)
        return dropped

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        rec = {"step": step, **values}
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
