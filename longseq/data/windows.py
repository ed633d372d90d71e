"""Training-time history windows: which most-recent slice of each history is served.

Length extrapolation (paper §3.2-3.3): train on short windows of the most recent events, sampled
per request from a (usually U-shaped) Beta distribution, and serve the full history. The window is
always a *suffix* (the most recent events): the paper ranks suffix > random subset > prefix.

``L = round_to * round((L_min + Beta(alpha, beta) * (L_max - L_min)) / round_to)`` with
``beta = alpha * (L_max - L_avg) / (L_avg - L_min)`` so that the mean is ``L_avg``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class WindowConfig:
    """How many of the most recent history events each request serves.

    Attributes:
        mode: ``full`` (whole stored history), ``fixed`` (``length`` events) or ``beta``.
        length: window for ``fixed``.
        l_min / l_max / l_avg: range and mean of the Beta-sampled length (``beta`` mode).
        alpha: first Beta shape parameter; ``< 1`` with the derived ``beta < 1`` gives a U shape.
        round_to: sampled lengths are rounded to a multiple of this (tensor-core alignment).
    """

    mode: str = "full"
    length: int = 0
    l_min: int = 16
    l_max: int = 1024
    l_avg: int = 256
    alpha: float = 0.25
    round_to: int = 8

    def validate(self, prefix: str = "window") -> None:
        """Raise ``ValueError`` naming the offending key."""
        if self.mode not in ("full", "fixed", "beta"):
            raise ValueError(f"{prefix}.mode must be full|fixed|beta, got {self.mode!r}")
        if self.mode == "fixed" and self.length <= 0:
            raise ValueError(f"{prefix}.length must be > 0 for mode=fixed, got {self.length}")
        if self.mode == "beta":
            if not (0 <= self.l_min < self.l_avg < self.l_max):
                raise ValueError(
                    f"{prefix}: need 0 <= l_min < l_avg < l_max, got "
                    f"{self.l_min}, {self.l_avg}, {self.l_max}"
                )
            if self.alpha <= 0:
                raise ValueError(f"{prefix}.alpha must be > 0, got {self.alpha}")

    @property
    def beta(self) -> float:
        """The second Beta parameter implied by the mean ``l_avg``."""
        return self.alpha * (self.l_max - self.l_avg) / (self.l_avg - self.l_min)


def sample_windows(cfg: WindowConfig, rng: np.random.Generator, n: int) -> np.ndarray | None:
    """Window lengths for ``n`` requests, or ``None`` for the full history."""
    if cfg.mode == "full":
        return None
    if cfg.mode == "fixed":
        return np.full(n, cfg.length, dtype=np.int64)
    x = rng.beta(cfg.alpha, cfg.beta, size=n)
    raw = cfg.l_min + x * (cfg.l_max - cfg.l_min)
    r = max(1, cfg.round_to)
    out = np.maximum(r, np.round(raw / r).astype(np.int64) * r)
    return np.minimum(out, max(r, (cfg.l_max // r) * r))


#: A served window (evaluation ``windows``, ``trainer.eval_windows``, serving ``window``) is the
#: number of most recent events served per request; ``FULL`` (0) serves the whole stored history.
#: Inside the code the full history is ``None`` (`served_window`): one convention, converted at
#: the config edge only.
FULL = 0


def served_window(window: int) -> int | None:
    """A configured served window -> the code's form: ``None`` for `FULL`, else the window."""
    if window < 0:
        raise ValueError(
            f"a served window is >= 1 events or {FULL} (the full history), got {window}"
        )
    return None if window == FULL else int(window)


def served_windows(windows: list[int]) -> list[int | None]:
    """A configured list of served windows (empty: the full history alone) -> the code's form."""
    return [served_window(w) for w in windows] or [None]


def check_served_windows(windows: list[int], key: str) -> None:
    """Raise ``ValueError`` naming ``key`` unless every window is >= 1 or `FULL` (0)."""
    bad = [w for w in windows if w < 0]
    if bad:
        raise ValueError(
            f"{key}={list(windows)}: a served window is a number of most recent events (>= 1) "
            f"or {FULL} (the full stored history)"
        )
