"""Run metrics: one `MetricsLogger` with backends, all on rank 0.

- ``metrics.jsonl`` (always): one JSON object per logged step (``{"step": n, ...}``).
- wandb (``wandb.mode=offline|online``): files under ``<run_dir>/wandb``; a resumed run passes the
  previous run id to continue the same run.
- TensorBoard (``trainer.tensorboard=true``): scalars to ``<run_dir>/tensorboard``
  (``torch.utils.tensorboard.SummaryWriter``; needs the ``tensorboard`` package).

Only numeric values go to wandb and TensorBoard; ``metrics.jsonl`` gets everything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol, cast


class MetricsBackend(Protocol):
    """Where logged values go besides ``metrics.jsonl``."""

    def log(self, step: int, values: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float)}


class JsonlBackend:
    """Appends ``{"step": n, **values}`` lines to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def log(self, step: int, values: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")

    def close(self) -> None:
        pass


class WandbBackend:
    """A wandb run (``mode``: offline or online)."""

    def __init__(self, run_dir: Path, mode: str, **init: Any) -> None:
        import wandb  # imported only when asked for: it is slow to import

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(mode=cast(Any, mode), dir=str(run_dir), resume="allow", **init)

    def log(self, step: int, values: dict[str, Any]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class TensorBoardBackend:
    """Scalars to an event file under ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "trainer.tensorboard=true needs the tensorboard package "
                "(pinned in requirements/lock-cpu.txt)"
            ) from e
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, step: int, values: dict[str, Any]) -> None:
        for k, v in _numbers(values).items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MetricsLogger:
    """Writes metrics to ``<run_dir>/metrics.jsonl`` on rank 0 and mirrors them to wandb and
    TensorBoard when those are switched on. Other ranks (``enabled=False``) log nothing.

    Args:
        run_dir: the run folder.
        enabled: rank 0.
        wandb_mode: ``disabled`` | ``offline`` | ``online``.
        project / entity / run_id / config / name: passed to ``wandb.init``.
        tensorboard: also write ``<run_dir>/tensorboard``.
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
        tensorboard: bool = False,
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.run_id = run_id
        self.backends: list[MetricsBackend] = []
        if not enabled:
            return
        self.backends.append(JsonlBackend(self.path))
        if wandb_mode not in ("disabled", "", None):
            if wandb_mode not in ("offline", "online"):
                raise ValueError(f"wandb.mode must be disabled|offline|online, got {wandb_mode!r}")
            wb = WandbBackend(
                Path(run_dir), wandb_mode, project=project, entity=entity, id=run_id,
                config=config, name=name,
            )  # fmt: skip
            self.backends.append(wb)
            self.run_id = wb.run.id
        if tensorboard:
            self.backends.append(TensorBoardBackend(Path(run_dir) / "tensorboard"))

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
        """Log ``values`` at ``step`` to every backend (rank 0; a no-op elsewhere)."""
        for b in self.backends:
            b.log(step, values)

    def close(self) -> None:
        """Finish the wandb run and flush TensorBoard."""
        for b in self.backends:
            b.close()
        self.backends = []
