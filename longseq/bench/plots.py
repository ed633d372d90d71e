"""One PNG per suite from its JSON payload (matplotlib, Agg backend)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from longseq.bench.suites import suite_function


def _ok(payload: dict[str, Any], **match: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in payload["results"]
        if "skipped" not in r and all(r.get(k) == v for k, v in match.items())
    ]


def plot_scaling(payload: dict[str, Any], axes: Any) -> None:
    """The scaling suite's figure on two axes."""
    ax_t, ax_m = axes
    towers = payload["config"]["towers"]
    for name in towers:
        rows = sorted(_ok(payload, tower=name), key=lambda r: r["length"])
        xs = [r["length"] for r in rows]
        ax_t.loglog(xs, [r["per_target_s"] * 1e3 for r in rows], "o-", label=name, base=2)
        mib = [r["saved_activation_bytes_per_target"] / 2**20 for r in rows]
        ax_m.loglog(xs, mib, "o-", label=name, base=2)
    exps = payload["summary"]["exponent"]
    ax_t.set_title("fwd+bwd per target; fitted exponents " + ", ".join(
        f"{k} {v:.2f}" for k, v in exps.items() if v is not None), fontsize=8)  # fmt: skip
    ax_t.set_xlabel("history length")
    ax_t.set_ylabel("ms per target")
    ax_m.set_title("activation bytes saved for backward", fontsize=8)
    ax_m.set_xlabel("history length")
    ax_m.set_ylabel("MiB per target")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)


def plot_rlb(payload: dict[str, Any], axes: Any) -> None:
    """The rlb suite's figure on two axes."""
    ax_t, ax_b = axes
    tp = _ok(payload, part="throughput")
    for length in sorted({r["length"] for r in tp}):
        rows = sorted((r for r in tp if r["length"] == length), key=lambda r: r["targets"])
        ax_t.plot(
            [r["targets"] for r in rows], [r["speedup"] for r in rows], "o-", label=f"L={length}"
        )
    ax_t.axhline(1.0, color="gray", lw=0.8)
    ax_t.set_xscale("log", base=2)
    ax_t.set_xlabel("targets per request T")
    ax_t.set_ylabel("RLB / pointwise targets/s")
    ax_t.set_title("training throughput (same targets per step)", fontsize=8)
    series = {
        "stored, plain": ("stored", "plain_ratio"),
        "stored, zstd dispersed": ("stored", "zstd_ratio_dispersed"),
        "stored, zstd adjacent": ("stored", "zstd_ratio"),
        "host-to-device": ("h2d", "ratio"),
        "all-to-all ids": ("a2a", "ids_ratio"),
    }
    styles = ("o-", "s--", "^-", "v:", "x-.")
    for (label, (part, key)), style in zip(series.items(), styles):
        rows = _ok(payload, part=part)
        if not rows:
            continue
        length = max(r["length"] for r in rows)
        rows = sorted((r for r in rows if r["length"] == length), key=lambda r: r["targets"])
        ax_b.loglog([r["targets"] for r in rows], [r[key] for r in rows], style,
                    label=f"{label} (L={length})", base=2, alpha=0.8)  # fmt: skip
    ax_b.set_xlabel("targets per request T")
    ax_b.set_ylabel("RLB / pointwise bytes per target")
    ax_b.set_title("bytes per target", fontsize=8)
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)


def plot_kernel(payload: dict[str, Any], axes: Any) -> None:
    """The kernel suite's figure on two axes."""
    rows = _ok(payload)
    variants = sorted({r["variant"] for r in rows})
    cases = sorted({(r["length"], r["targets"]) for r in rows})
    width = 0.8 / max(len(variants), 1)
    for ax, key, title in (
        (axes[0], "fraction_of_copy_bw", "achieved bytes/s / measured copy"),
        (axes[1], "fraction_of_matmul", "achieved FLOP/s / measured matmul"),
    ):
        for i, v in enumerate(variants):
            vals = {(r["length"], r["targets"]): r[key] for r in rows if r["variant"] == v}
            ax.bar([j + i * width for j in range(len(cases))],
                   [vals.get(c, 0.0) for c in cases], width, label=v)  # fmt: skip
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(cases))])
        ax.set_xticklabels([f"L={c[0]}\nT={c[1]}" for c in cases], fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=6)
        ax.grid(True, axis="y", alpha=0.3)


def plot_serve(payload: dict[str, Any], axes: Any) -> None:
    """The serve suite's figure on two axes."""
    ax_t, ax_c = axes
    for form in payload["config"]["forms"]:
        rows = sorted(_ok(payload, form=form, part="request"), key=lambda r: r["candidates"])
        ks = [r["candidates"] for r in rows]
        line = ax_t.plot(ks, [r["median_s"] * 1e3 for r in rows], "o-", label=f"{form}: request")
        user = payload["summary"][form]["user_side_s"] * 1e3
        ax_t.axhline(user, ls="--", color=line[0].get_color(), label=f"{form}: user side")
        ax_c.plot(ks, [r["candidates_per_s"] for r in rows], "o-", label=form)
    ax_t.set_xscale("log", base=2)
    ax_t.set_xlabel("candidates K")
    ax_t.set_ylabel("ms per request")
    ax_t.set_title(f"one request, history {payload['config']['length']}", fontsize=8)
    ax_c.set_xscale("log", base=2)
    ax_c.set_yscale("log")
    ax_c.set_xlabel("candidates K")
    ax_c.set_ylabel("candidates/s")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)


def plot_suite(payload: dict[str, Any], path: str | Path) -> Path | None:
    """Write the suite's figure to ``path``; None (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    try:
        suite_function(payload["suite"], "plot")(payload, axes)
        env = payload["environment"]
        fig.suptitle(
            f"{payload['suite']} - {env['device_name']} ({env['device']}, {env['dtype']}, "
            f"{env['torch_threads']} thread(s), {env['mode']})",
            fontsize=9,
        )
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    except Exception as e:  # noqa: BLE001 - the JSON is written already: a plot never loses it
        print(
            f"[bench] {payload['suite']}: plot skipped ({type(e).__name__}: {e})", file=sys.stderr
        )
        return None
    finally:
        plt.close(fig)
    return path
