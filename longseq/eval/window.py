"""The metrics of one window in one process: `window_metrics` (NumPy and `longseq.metrics` only).

Kept free of the model and of torch.distributed, so the distributed tests and benchmarks can
compare against it in light processes; `longseq.eval.evaluate` re-exports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from longseq.metrics import auc, calibration, gauc, log_loss

if TYPE_CHECKING:
    from longseq.eval.predict import Predictions


def window_metrics(p: Predictions, tasks: list[str]) -> list[dict[str, Any]]:
    """AUC, GAUC (weighted and not), log loss, calibration and counts, per task (one process;
    `longseq.eval.dist_metrics.dist_window_metrics` returns the same rows over several)."""
    out = []
    served = p.served_len.astype(np.int64)
    requests = int(np.unique(p.request_id).size)
    for k, task in enumerate(tasks):
        y, s = p.labels[:, k], p.scores[:, k]
        g = gauc(y, s, p.user_id)
        out.append(
            {
                "task": task,
                "auc": auc(y, s),
                "gauc": g.gauc,
                "gauc_unweighted": g.gauc_unweighted,
                "gauc_users": g.groups_used,
                "gauc_users_excluded": g.groups_excluded,
                "nll": log_loss(y, s),
                "calibration": calibration(y, s),
                "requests": requests,
                "targets": int(y.size),
                "users": g.groups_used + g.groups_excluded,  # every user is one or the other
                "served_len_mean": int(served.sum()) / served.size,
                "served_len_max": int(served.max()),
            }
        )
    return out
