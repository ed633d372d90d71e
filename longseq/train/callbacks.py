"""Callbacks of the training loop (evaluation is one of them, not a second loop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class LoopState:
    """What callbacks may read: the step just finished and the latest logged values."""

    step: int
    max_steps: int
    run_dir: str
    values: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  #: the checkpoint written at this step, if any
    #: set by a callback to end training after this step (the reason, logged); callbacks must
    #: agree on every rank (the evaluation callback broadcasts rank 0's decision)
    stop: str | None = None


class Callback(Protocol):
    """Called by `longseq.train.loop.train` on every rank (callbacks decide what rank 0 does)."""

    def on_step_end(self, state: LoopState) -> None: ...

    def on_train_end(self, state: LoopState) -> None: ...
