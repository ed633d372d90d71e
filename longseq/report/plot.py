"""The comparison plot: AUC against the served window for every run, beside the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_auc_vs_window(rep: dict[str, Any], path: str | Path) -> None:
    """One panel per task: each run's AUC per served window (log x), the oracle's ceiling curve
    (dashed) and its ``p_true`` AUC (dotted), from a :func:`~longseq.report.compare.build_report`
    dict."""
    tasks = rep["tasks"] or ["-"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for run in rep["runs"]:
            pts = sorted(
                (m["window"], m["auc"])
                for m in rep["metrics"]
                if m["run"] == run["label"] and m["task"] == task and m["auc"] is not None
            )
            if pts:
                ax.plot(*zip(*pts), "o-", label=run["label"])
        oracles = [(d, o) for d, o in rep["oracle"].items() if o["task"] == task]
        for i, (d, o) in enumerate(oracles):
            name = "oracle" + (f" ({Path(d).name})" if len(oracles) > 1 else "")
            curve = sorted((e["window"], e["auc"]) for e in o["curve"])
            color = f"{0.25 + 0.4 * i / max(len(oracles) - 1, 1):.2f}"
            if curve:
                ax.plot(*zip(*curve), "s--", color=color, label=f"{name} ceiling (last w events)")
            if (o.get("p_true") or {}).get("auc") is not None:
                ax.axhline(o["p_true"]["auc"], color=color, lw=0.8, ls=":", label=f"{name} p_true")
        ax.set_xscale("log")
        ax.set_xlabel("history events served (most recent)")
        ax.set_ylabel("AUC")
        ax.set_title(f"task {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
