"""Results over seeds: mean ± std of test metrics per model, from runs named ``<model>_s<seed>``.

A reference number from one seed says little on a small real log: the seed-to-seed spread of a
test AUC on MovieLens-100K is of the order of the gap between towers. `collect` finds every run
folder ``<runs>/<model>_s<seed>`` holding ``<eval>/eval.json``, reads one row per run (a task at
one served window), and `summarise` groups the rows by model: mean, sample standard deviation
(``ddof=1``) and the seeds seen, for AUC, GAUC and log loss. `render` writes the Markdown table
that ``benchmarks/quality_real.sh`` puts into ``docs/results.md``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ``<model>_s<seed>``: the run-folder names `collect` reads
RUN_NAME = re.compile(r"^(?P<model>.+)_s(?P<seed>\d+)$")
#: the metrics summarised, as ``eval.json`` names them (lower is better for ``nll``)
METRICS = ("auc", "gauc", "nll")


@dataclass
class SeedRow:
    """One run's numbers: the model and seed (from the folder name) and its metrics."""

    model: str
    seed: int
    window: int
    step: int | None
    metrics: dict[str, float]
    source: Path


@dataclass
class Summary:
    """One model over its seeds."""

    model: str
    seeds: list[int]
    window: int
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)


def _row(eval_json: Path, model: str, seed: int, task: str, window: int) -> SeedRow:
    try:
        doc = json.loads(eval_json.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{eval_json}: unreadable ({e})") from None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list) or not results:
        raise ValueError(f"{eval_json}: no 'results' list (not an eval.json of longseq.eval)")
    task = task or str(results[0]["task"])
    rows = [r for r in results if r.get("task") == task]
    if not rows:
        have = sorted({str(r.get("task")) for r in results})
        raise ValueError(f"{eval_json}: task={task!r} not evaluated (tasks: {have})")
    windows = sorted(int(r["window"]) for r in rows)
    w = window or windows[-1]
    match = [r for r in rows if int(r["window"]) == w]
    if not match:
        raise ValueError(f"{eval_json}: window={w} not evaluated (windows: {windows})")
    metrics = {m: float(match[0][m]) for m in METRICS if m in match[0]}
    return SeedRow(model, seed, w, doc.get("step"), metrics, eval_json)


def collect(
    runs: str | Path, eval_dir: str = "eval", task: str = "", window: int = 0
) -> list[SeedRow]:
    """Every ``<runs>/<model>_s<seed>/<eval_dir>/eval.json``, one `SeedRow` each (``task``:
    default the first evaluated; ``window``: default the largest). A run folder without the
    eval file is skipped (not finished); a malformed one raises ``ValueError`` naming it."""
    root = Path(runs)
    if not root.is_dir():
        raise FileNotFoundError(f"runs={root}: not a folder")
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        m = RUN_NAME.match(folder.name)
        f = folder / eval_dir / "eval.json"
        if m and f.is_file():
            out.append(_row(f, m["model"], int(m["seed"]), task, window))
    return out


def summarise(rows: list[SeedRow]) -> list[Summary]:
    """Group ``rows`` by model (in first-seen order): mean and sample std (0 for one seed)."""
    by: dict[str, list[SeedRow]] = {}
    for r in rows:
        by.setdefault(r.model, []).append(r)
    out = []
    for model, group in by.items():
        windows = {r.window for r in group}
        if len(windows) != 1:
            raise ValueError(f"{model}: seeds evaluated at different windows {sorted(windows)}")
        s = Summary(model, sorted(r.seed for r in group), windows.pop())
        for m in METRICS:
            vals = [r.metrics[m] for r in group if m in r.metrics]
            if vals:
                s.mean[m] = statistics.fmean(vals)
                s.std[m] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out.append(s)
    return out


def render(summaries: list[Summary], title: str = "") -> str:
    """A Markdown table: model, seeds, window, then ``mean ± std`` per metric; best AUC in bold."""
    best = max((s.mean.get("auc", -math.inf) for s in summaries), default=None)
    lines = [f"#### {title}", ""] if title else []
    lines += [
        "| model | seeds | window | test AUC | test GAUC | test log loss |",
        "|---|---|---|---|---|---|",
    ]
    for s in summaries:
        cells = []
        for m in METRICS:
            if m not in s.mean:
                cells.append("-")
                continue
            text = f"{s.mean[m]:.4f} ± {s.std[m]:.4f}"
            cells.append(f"**{text}**" if m == "auc" and s.mean[m] == best else text)
        seeds = ",".join(map(str, s.seeds))
        lines.append(f"| {s.model} | {seeds} | {s.window} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(summaries: list[Summary], rows: list[SeedRow]) -> dict[str, Any]:
    """The summaries and every run's row, for ``seeds.json``."""
    return {
        "models": [
            {"model": s.model, "seeds": s.seeds, "window": s.window, "mean": s.mean, "std": s.std}
            for s in summaries
        ],
        "runs": [
            {
                "model": r.model,
                "seed": r.seed,
                "window": r.window,
                "step": r.step,
                "metrics": r.metrics,
                "eval_json": str(r.source),
            }
            for r in rows
        ],  # fmt: skip
    }


@dataclass
class SeedsConfig:
    """Config of ``python -m longseq.report.seeds`` (registered as ``report_seeds_schema``).

    Attributes:
        runs: folder holding the ``<model>_s<seed>`` run folders.
        out: output folder (``seeds.md``, ``seeds.json``).
        eval: each run's eval folder name (``<run>/<eval>/eval.json``).
        task: task to report (empty: the first evaluated).
        window: served window to report (0: the largest evaluated).
        title: heading of the table (empty: none).
    """

    runs: str = ""
    out: str = ""
    eval: str = "eval"
    task: str = ""
    window: int = 0
    title: str = ""


def main() -> None:
    """``python -m longseq.report.seeds runs=<dir> out=<dir> [eval=eval] [task=] [window=0]``."""
    import sys

    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import DictConfig, OmegaConf

    from longseq.config import CONFIG_DIR

    ConfigStore.instance().store(name="report_seeds_schema", node=SeedsConfig)

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="report_seeds")
    def run(cfg: DictConfig) -> None:
        conf = OmegaConf.to_object(cfg)
        assert isinstance(conf, SeedsConfig)
        for key in ("runs", "out"):
            if not getattr(conf, key):
                print(f"report.seeds: {key}=<folder> is required", file=sys.stderr)
                sys.exit(2)
        try:
            rows = collect(conf.runs, conf.eval, conf.task, conf.window)
            if not rows:
                raise ValueError(f"runs={conf.runs}: no <model>_s<seed>/{conf.eval}/eval.json")
            summaries = summarise(rows)
        except (FileNotFoundError, ValueError, KeyError) as e:
            print(f"report.seeds: {e}", file=sys.stderr)
            sys.exit(2)
        out = Path(conf.out)
        out.mkdir(parents=True, exist_ok=True)
        md = render(summaries, conf.title)
        (out / "seeds.md").write_text(md)
        (out / "seeds.json").write_text(json.dumps(to_json(summaries, rows), indent=2) + "\n")
        print(md, end="", flush=True)

    run()


if __name__ == "__main__":
    main()
