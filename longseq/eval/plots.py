"""Plots of evaluation results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_auc_vs_window(result: dict[str, Any], path: str | Path) -> None:
    """AUC and GAUC against the served window (log x), model beside the oracle ceiling."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("auc", "gauc")):
        for task in result["tasks"]:
            rows = sorted(
                (r for r in result["results"] if r["task"] == task), key=lambda r: r["window"]
            )
            ax.plot(
                [r["window"] for r in rows], [r[key] for r in rows], "o-", label=f"model ({task})"
            )
        orc = result.get("oracle")
        if orc:
            ws = orc["windows"]
            ax.plot(
                [e["window"] for e in ws],
                [e[key] for e in ws],
                "s--",
                color="gray",
                label="oracle ceiling (last w events)",
            )
            ax.axhline(orc["p_true"][key], color="black", lw=0.8, ls=":", label="oracle p_true")
        ax.set_xscale("log")
        ax.set_xlabel("history events served (most recent)")
        ax.set_ylabel(key.upper())
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"step {result.get('step')} on {result.get('split')}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
