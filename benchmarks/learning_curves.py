"""Learning curves of docs/results.md: test AUC of every kept checkpoint of some runs.

    .venv/bin/python benchmarks/learning_curves.py out=docs/img/long_curves.png \
        runs=runs/long/full1k,runs/long/plain1k,runs/farci/full_curve

For each run, every ``checkpoints/step_<n>`` is evaluated with ``python -m longseq.eval`` at the
run's full window (the data set's ``hist_len_max``), once (results are cached in
``<run>/curve/step_<n>/eval.json``). The x axes are the optimizer steps and the training targets
seen per category (``step x world size x batch size x targets per request / categories``). The
dashed lines are the oracle's ceilings at the full window and at the data set's ``far`` (the
recent-window ceiling). Writes the PNG and a JSON of the points next to it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

STEP = re.compile(r"^step_(\d+)$")


def _args(argv: list[str]) -> dict[str, str]:
    out = {}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {a!r} (keys: out, runs)")
        out[key] = value
    return out


def curve(run: Path) -> dict:
    """AUC at the full window of every kept checkpoint of ``run``."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data = Path(cfg["data"]["path"])
    meta = json.loads((data / "meta.json").read_text())
    full = int(meta["hist_len_max"])
    world = json.loads(next((run / "checkpoints").glob("step_*/longseq.json")).read_text()).get(
        "world_size", 2
    )
    points = []
    for ck in sorted(
        (p for p in (run / "checkpoints").iterdir() if STEP.match(p.name)),
        key=lambda p: int(STEP.match(p.name).group(1)),
    ):
        step = int(STEP.match(ck.name).group(1))
        out = run / "curve" / ck.name
        if not (out / "eval.json").exists():
            cmd = [sys.executable, "-m", "longseq.eval", f"checkpoint={ck}", f"data.path={data}"]
            cmd += [f"out={out}", f"windows=[{full}]", "progress=false"]
            subprocess.run(cmd, check=True)
        res = json.loads((out / "eval.json").read_text())["results"][0]
        per_cat = step * world * cfg["data"]["batch_size"] * meta["targets_per_request"]
        points.append(
            {
                "step": step,
                "auc": res["auc"],
                "targets_per_category": per_cat / meta["num_categories"],
            }
        )
    oracle = {
        r["window"]: r["auc"] for r in json.loads((data / "oracle.json").read_text())["windows"]
    }
    far = int(meta["config"].get("far", 0)) or min(oracle)
    return {
        "run": str(run),
        "hist_len": full,
        "points": points,
        "ceiling_full": oracle[full],
        "ceiling_recent": oracle.get(far, oracle[min(oracle)]),
        "recent_window": far,
    }


def main(argv: list[str]) -> None:
    args = _args(argv)
    runs = [Path(r) for r in args["runs"].split(",") if r]
    curves = [curve(r) for r in runs]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for c in curves:
        label = f"{Path(c['run']).name} (L={c['hist_len']})"
        for ax, key in zip(axes, ("step", "targets_per_category")):
            xs = [p[key] for p in c["points"]]
            (line,) = ax.plot(xs, [p["auc"] for p in c["points"]], marker="o", label=label)
            ax.axhline(c["ceiling_full"], color=line.get_color(), ls="--", lw=0.8)
            ax.axhline(c["ceiling_recent"], color=line.get_color(), ls=":", lw=0.8)
    axes[0].set_xlabel("optimizer steps")
    axes[1].set_xlabel("training targets per category")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("test AUC at the full window")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("dashed: full-window ceiling, dotted: recent-window ceiling (oracle)")
    fig.tight_layout()
    out = Path(args.get("out", "docs/img/long_curves.png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    out.with_suffix(".json").write_text(json.dumps(curves, indent=2) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main(sys.argv[1:])
