"""Preemption: SIGTERM/SIGUSR1 make the run checkpoint and exit cleanly.

The signal only sets a flag. The ranks agree on stopping at log steps (the flag rides in the
loop's log all-reduce) and at checkpoint steps (one small all-reduce of the flag), so every rank
stops, and checkpoints, at the same step; there is no collective on the other steps. The stop
therefore happens at the next log or checkpoint step after the signal (at most
``min(trainer.log_every, trainer.checkpoint_every)`` steps later).
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist


class Preemption:
    """Installs the SIGTERM/SIGUSR1 handlers; `agreed` is collective."""

    def __init__(self) -> None:
        self.flag = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        self.flag = True

    def local(self) -> float:
        """1.0 when this rank was signalled, else 0.0 (to sum into a collective)."""
        return 1.0 if self.flag else 0.0

    def agreed(self, device: torch.device | None = None) -> bool:
        """Whether any rank was signalled (an all-reduce over the default group, of a tensor on
        ``device``: the training device, so that NCCL can reduce it)."""
        t = torch.tensor([self.local()], device=device)
        if dist.is_initialized():
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)
