"""Training-side metrics besides the loss: windowed AUC and NE through ``torchrec.metrics``,
and the process's peak memory.

`WindowedRecMetrics` feeds TorchRec's `AUCMetric` and `NEMetric` (the metric classes that
``RecMetricModule`` holds; used directly because the module adds throughput and state metrics
and a model-output convention this trainer does not need) with every step's per-target
probabilities and labels. Both keep a window of the most recent ``window`` targets over all
ranks together (TorchRec's semantics: ``ceil(window / world_size)`` targets per rank, all ranks'
windows gathered at `compute`). `compute` is collective (torchmetrics gathers the states over the
default process group, gloo or NCCL) and returns the values on rank 0.
"""

from __future__ import annotations

import math
import resource
import sys

import torch
from torchrec.metrics.auc import AUCMetric
from torchrec.metrics.metrics_config import RecTaskInfo
from torchrec.metrics.ne import NEMetric


class WindowedRecMetrics:
    """Window AUC and NE per task (``train/auc/<task>``, ``train/ne/<task>``).

    Args:
        tasks: the model's task names (columns of the logits and labels).
        window: targets in the window over all ranks (>= 1).
        world_size / rank: of the default process group.
        device: where the states live (the training device: NCCL gathers CUDA tensors).
    """

    def __init__(
        self,
        tasks: list[str],
        window: int,
        world_size: int = 1,
        rank: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.tasks = list(tasks)
        infos = [
            RecTaskInfo(name=t, label_name=f"label_{t}", prediction_name=t, weight_name=f"w_{t}")
            for t in self.tasks
        ]
        kw = dict(world_size=world_size, my_rank=rank, batch_size=1, tasks=infos)
        # TorchRec checks window >= batch_size only; batches here vary in targets, so 1
        self.auc = AUCMetric(window_size=window, **kw)
        self.ne = NEMetric(window_size=window, **kw)
        self.window = window
        self.device = device or torch.device("cpu")
        self.auc.to(self.device)
        self.ne.to(self.device)

    @torch.no_grad()
    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch: ``probs`` and ``labels`` are ``[targets, tasks]``."""
        probs = probs.detach().float().to(self.device)
        labels = labels.detach().float().to(self.device)
        preds = {t: probs[:, k] for k, t in enumerate(self.tasks)}
        labs = {t: labels[:, k] for k, t in enumerate(self.tasks)}
        ones = {t: torch.ones_like(probs[:, k]) for k, t in enumerate(self.tasks)}
        for m in (self.auc, self.ne):
            m.update(predictions=preds, labels=labs, weights=ones)

    def compute(self) -> dict[str, float | None]:
        """The window values (collective; rank 0 gets them, other ranks ``{}``); None where a
        value is not finite (e.g. one label class in the window)."""
        out: dict[str, float | None] = {}
        for name, m in (("auc", self.auc), ("ne", self.ne)):
            for key, value in m.compute().items():  # e.g. "auc-click|window_auc"
                head, _, tail = key.partition("|")
                if tail != f"window_{name}":
                    continue
                task = head.split("-", 1)[1]
                v = float(value.reshape(-1)[0])
                out[f"train/{name}/{task}"] = v if math.isfinite(v) else None
        return out


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    """This process's peak memory so far, in MiB: ``mem/peak_rss_mib`` (maximum resident set
    size, from ``getrusage``) and, on CUDA, ``mem/cuda_peak_alloc_mib``
    (``torch.cuda.max_memory_allocated``)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_mib = rss / 1024**2 if sys.platform == "darwin" else rss / 1024
    out = {"mem/peak_rss_mib": round(rss_mib, 1)}
    if device.type == "cuda":
        out["mem/cuda_peak_alloc_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out
