"""The declared cluster topology used by ``dry_run=true``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TopologyConfig:
    """The cluster to plan for: ``nodes`` x ``gpus_per_node`` devices of ``hbm_gb`` each."""

    nodes: int = 2
    gpus_per_node: int = 8
    hbm_gb: float = 80.0
    compute_device: str = "cuda"
