"""``stats.json`` of a conversion: per split users, requests, targets per request and history
length (mean and nearest-rank percentiles), label rates, plus the input counts.

Accumulated bucket by bucket: a bucket holds whole users, so distinct users add up exactly;
lengths are kept as histograms (one counter per length)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERCENTILES: tuple[int, ...] = (0, 50, 90, 99, 100)


def _add_hist(h: np.ndarray, values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return h
    c = np.bincount(values)
    if c.size > h.size:
        c[: h.size] += h
        return c
    h[: c.size] += c
    return h


def percentiles(hist: np.ndarray) -> dict[str, Any]:
    """Mean and nearest-rank percentiles of the values counted by ``hist``."""
    n = int(hist.sum())
    if n == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    cdf = np.cumsum(hist)
    out: dict[str, Any] = {"mean": round(float((np.arange(hist.size) * hist).sum() / n), 3)}
    for p in PERCENTILES:
        rank = max(1, int(np.ceil(p / 100 * n)))
        out[f"p{p}"] = int(np.searchsorted(cdf, rank))
    return out


@dataclass
class SplitStats:
    """Counters of one split."""

    users: int = 0
    requests: int = 0
    targets: int = 0
    hist_events: int = 0
    tpr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    hlen: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    label_sums: dict[str, int] = field(default_factory=dict)

    def add(
        self, users: np.ndarray, tcount: np.ndarray, hlen: np.ndarray, labels: dict[str, int]
    ) -> None:
        """Add requests (their users, target counts, history lengths and label sums)."""
        self.users += int(np.unique(users).size)
        self.requests += int(tcount.size)
        self.targets += int(tcount.sum())
        self.hist_events += int(hlen.sum())
        self.tpr = _add_hist(self.tpr, tcount)
        self.hlen = _add_hist(self.hlen, hlen)
        for k, v in labels.items():
            self.label_sums[k] = self.label_sums.get(k, 0) + int(v)

    def to_dict(self) -> dict[str, Any]:
        rates = {
            k: (round(v / self.targets, 6) if self.targets else None)
            for k, v in self.label_sums.items()
        }
        return {
            "users": self.users,
            "requests": self.requests,
            "targets": self.targets,
            "history_events": self.hist_events,
            "targets_per_request": percentiles(self.tpr),
            "history_length": percentiles(self.hlen),
            "label_rates": rates,
        }
