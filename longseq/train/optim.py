"""Optimizers: the fused sparse optimizer (attached at sharding time) + AdamW on dense weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter


@dataclass
class DenseOptimConfig:
    """AdamW on dense parameters with linear warm-up then cosine decay to ``min_lr_ratio``."""

    lr: float = 2e-3
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0

    def validate(self, prefix: str = "trainer.dense") -> None:
        """Raise ``ValueError`` naming the key for a value torch would reject (a negative or NaN
        rate) or silently misuse (a NaN ``grad_clip`` compares false: clipping off)."""
        for key in ("lr", "weight_decay"):
            check_rate(getattr(self, key), f"{prefix}.{key}")
        betas = list(self.betas)
        if len(betas) != 2 or not all(_finite(b) and 0 <= b < 1 for b in betas):
            raise ValueError(f"{prefix}.betas must be two numbers in [0, 1), got {betas}")
        if self.warmup_steps < 0:
            raise ValueError(f"{prefix}.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (_finite(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"{prefix}.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not _finite(self.grad_clip):
            raise ValueError(
                f"{prefix}.grad_clip must be finite (the largest dense gradient norm; 0 or "
                f"less = no clipping), got {self.grad_clip}"
            )


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_rate(value: object, key: str) -> None:
    """Raise ``ValueError`` naming ``key`` unless ``value`` is a finite number >= 0."""
    if not (_finite(value) and cast(float, value) >= 0):
        raise ValueError(f"{key} must be a finite number >= 0, got {value}")


class ClippedOptimizer(CombinedOptimizer):
    """`CombinedOptimizer` that clips the dense gradients' global norm before each step.

    Clipping inside ``step`` keeps it in effect when TorchRec's train pipeline drives the
    optimizer. (Sparse rows are updated in backward by the fused optimizer: never clipped.)

    Each step also adds the dense gradients' global L2 norm (before clipping; computed without
    clipping when ``max_norm`` <= 0) to a running sum that `pop_grad_norm` returns as the mean
    since the last call; the sum stays on the device (no host sync per step).
    """

    def __init__(self, optims: list, clip_params: list[torch.Tensor], max_norm: float) -> None:
        super().__init__(optims)
        self._clip_params, self._max_norm = clip_params, max_norm
        self._norm_sum: torch.Tensor | None = None
        self._norm_steps = 0

    def step(self, closure=None) -> None:  # noqa: ANN001 - torch's optimizer signature
        params = [p for p in self._clip_params if p.grad is not None]
        if params:
            if self._max_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, self._max_norm)
            else:
                norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor; every rank steps together
                norm = norm.full_tensor()
            norm = norm.detach().float()
            self._norm_sum = norm if self._norm_sum is None else self._norm_sum + norm
            self._norm_steps += 1
        super().step(closure)

    def pop_grad_norm(self) -> float | None:
        """Mean dense gradient norm over the steps since the last call (None if none)."""
        if self._norm_sum is None or self._norm_steps == 0:
            return None
        mean = float(self._norm_sum.item()) / self._norm_steps
        self._norm_sum, self._norm_steps = None, 0
        return mean


def build_optimizer(dmp: nn.Module, cfg: DenseOptimConfig) -> CombinedOptimizer:
    """The DMP's fused sparse optimizer combined with AdamW over the dense parameters (dense
    gradients clipped to ``cfg.grad_clip`` before each step)."""
    dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    adamw = KeyedOptimizerWrapper(
        dense,
        lambda params: torch.optim.AdamW(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.betas[0], cfg.betas[1])
        ),
    )
    return ClippedOptimizer(
        [("sparse", dmp.fused_optimizer), ("dense", adamw)],
        list(dense.values()),
        cfg.grad_clip,
    )


def lr_factor(step: int, max_steps: int, cfg: DenseOptimConfig) -> float:
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, max_steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def learning_rates(opt: CombinedOptimizer) -> dict[str, float]:
    """``{"lr/dense": ..., "lr/sparse": ...}``: the first param group's lr of each optimizer."""
    out = {}
    for name, o in opt.optimizers:
        groups = getattr(o, "param_groups", [])
        if groups and "lr" in groups[0]:
            out[f"lr/{name}"] = float(groups[0]["lr"])
    return out


def set_dense_lr(opt: CombinedOptimizer, lr: float) -> None:
    """Set the learning rate of the dense AdamW groups (the sparse one is fused)."""
    for name, o in opt.optimizers:
        if name == "dense":
            for g in o.param_groups:
                g["lr"] = lr
