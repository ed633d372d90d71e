"""`Counters`: named sums packed into one float64 tensor, so that one all-reduce sums them all.

The training loop counts a window of steps (loss, targets, requests, ids, ...) on every rank and
sums the window over the ranks once per log step. Each counter has a name and a fixed slot; the
names are the interface, the slots an implementation detail.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class Counters:
    """Named float64 counters in one tensor.

    Args:
        names: the counters, in slot order (unique, at least one).

    ``add`` / ``set`` change one counter, ``reduce`` sums every counter over the ranks of the
    default process group in one all-reduce, ``as_dict`` reads them all, ``zero`` starts over.
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        names = tuple(names)
        if not names:
            raise ValueError("Counters needs at least one name")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"Counters: duplicate names {dupes}")
        self.names = names
        self._slot = {n: i for i, n in enumerate(names)}
        self.values = torch.zeros(len(names), dtype=torch.float64)

    def _index(self, name: str) -> int:
        try:
            return self._slot[name]
        except KeyError:
            raise KeyError(f"no counter {name!r}; the counters are {list(self.names)}") from None

    def add(self, name: str, value: float) -> None:
        """Add ``value`` to counter ``name``."""
        self.values[self._index(name)] += value

    def set(self, name: str, value: float) -> None:
        """Set counter ``name`` to ``value`` (e.g. a per-rank total that the reduce sums)."""
        self.values[self._index(name)] = value

    def __getitem__(self, name: str) -> float:
        return float(self.values[self._index(name)].item())

    def reduce(self, device: torch.device | None = None) -> None:
        """Sum every counter over the ranks (collective when torch.distributed is initialized;
        a no-op otherwise). The reduce runs on ``device`` (NCCL reduces CUDA tensors only); the
        values stay on the CPU."""
        if not dist.is_initialized():
            return
        on = self.values.to(device) if device is not None else self.values.clone()
        dist.all_reduce(on)
        self.values = on.cpu()

    def as_dict(self) -> dict[str, float]:
        """``{name: value}`` in slot order."""
        return dict(zip(self.names, self.values.tolist()))

    def zero(self) -> None:
        """Set every counter to 0."""
        self.values.zero_()
