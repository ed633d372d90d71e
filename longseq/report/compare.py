"""Compare evaluated runs: config differences and metrics per task and served window.

An input is an eval folder (holds ``eval.json``), a run folder (holds ``eval/eval.json`` or any
``eval*/eval.json``: each one found is a separate entry, labelled ``<run>/<eval folder>``) or an
``eval.json`` file. A run's config is the checkpoint's ``longseq.json`` (the checkpoint named in
``eval.json``; keys mapped onto the training config's layout, e.g. ``window`` -> ``data.window``)
overlaid with the run's ``config.yaml`` (the run folder above the eval folder, else the run folder
of the checkpoint), flattened to dotted keys. Keys matching :data:`IGNORE` (paths, names, logging)
are left out of the difference table.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Config keys (fnmatch patterns on dotted keys) never shown as differences: where things are,
#: what they are called, logging and checkpoint cadence, the checkpoint's file manifest; none of
#: them changes the model.
IGNORE: tuple[str, ...] = (
    "run_dir",
    "name",
    "resume",
    "data.path",
    "wandb.*",
    "wandb_run_id",
    "step",
    "trainer.progress",
    "trainer.log_every",
    "trainer.checkpoint_every",
    "trainer.keep_last",
    "manifest",
    "manifest.*",
)

#: Where the keys of a checkpoint's ``longseq.json`` live in the training config (``config.yaml``).
LONGSEQ_JSON_KEYS: dict[str, str] = {
    "window": "data.window",
    "pointwise": "data.pointwise",
    "data_path": "data.path",
}


@dataclass
class RunEval:
    """One evaluation of one run: its label, ``eval.json`` and flattened config."""

    label: str
    eval_json: Path
    result: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    config_sources: list[str] = field(default_factory=list)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def find_evals(path: str | Path) -> list[Path]:
    """The ``eval.json`` files of one input (eval folder, run folder or the file itself)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if (p / "eval.json").is_file():
        return [p / "eval.json"]
    found = sorted(p.glob("eval*/eval.json"))
    if not found:
        raise FileNotFoundError(f"{p}: no eval.json (looked for eval.json and eval*/eval.json)")
    return found


def load_config(eval_json: Path, result: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The flattened config of the run behind ``eval_json`` and the files it came from."""
    cfg: dict[str, Any] = {}
    sources: list[str] = []
    ckpt = Path(result["checkpoint"]) if result.get("checkpoint") else None
    if ckpt is not None and (ckpt / "longseq.json").is_file():
        meta = json.loads((ckpt / "longseq.json").read_text())
        cfg.update(flatten({LONGSEQ_JSON_KEYS.get(k, k): v for k, v in meta.items()}))
        sources.append(str(ckpt / "longseq.json"))
    runs = [eval_json.parent.parent] + ([ckpt.parent.parent] if ckpt is not None else [])
    yaml = next((r / "config.yaml" for r in runs if (r / "config.yaml").is_file()), None)
    if yaml is not None:
        from omegaconf import OmegaConf

        loaded = OmegaConf.to_container(OmegaConf.load(yaml), resolve=False)
        assert isinstance(loaded, dict)
        cfg.update(flatten(loaded))
        sources.append(str(yaml))
    if "split" in result:
        cfg["eval.split"] = result["split"]
    return cfg, sources


def collect(inputs: list[str], labels: list[str] | None = None) -> list[RunEval]:
    """Every evaluation found in ``inputs``, labelled (``labels``: one per input) and unique."""
    if labels and len(labels) != len(inputs):
        raise ValueError(f"labels: {len(labels)} given for {len(inputs)} inputs")
    runs: list[RunEval] = []
    for i, inp in enumerate(inputs):
        files = find_evals(inp)
        base = labels[i] if labels else Path(inp).resolve().name
        if Path(inp).is_file() and not labels:
            base = Path(inp).resolve().parent.name
        for f in files:
            label = base if len(files) == 1 else f"{base}/{f.parent.name}"
            result = json.loads(f.read_text())
            cfg, sources = load_config(f, result)
            runs.append(RunEval(label, f, result, cfg, sources))
    seen: dict[str, int] = {}
    for r in runs:  # identical labels get #2, #3, ...
        seen[r.label] = seen.get(r.label, 0) + 1
        if seen[r.label] > 1:
            r.label = f"{r.label}#{seen[r.label]}"
    return runs


def config_diff(runs: list[RunEval], ignore: tuple[str, ...] = IGNORE) -> dict[str, dict[str, Any]]:
    """``{dotted key: {label: value}}`` for the keys whose values differ (absent: None)."""
    keys = sorted({k for r in runs for k in r.config})
    out: dict[str, dict[str, Any]] = {}
    for k in keys:
        if any(fnmatch.fnmatchcase(k, pat) for pat in ignore):
            continue
        vals = {r.label: r.config.get(k) for r in runs}
        present = {r.label: k in r.config for r in runs}
        if (
            len({json.dumps(v, sort_keys=True) for v in vals.values()}) > 1
            or len(set(present.values())) > 1
        ):
            out[k] = vals
    return out


def metric_rows(runs: list[RunEval]) -> list[dict[str, Any]]:
    """One record per (run, task, window) with the metrics the report shows."""
    keys = ("auc", "gauc", "gauc_unweighted", "nll", "calibration", "served_len_mean")
    return [
        {
            "run": r.label,
            "task": e["task"],
            "window": int(e["window"]),
            **{k: e.get(k) for k in keys},
        }
        for r in runs
        for e in r.result.get("results", [])
    ]


def oracle_rows(runs: list[RunEval]) -> dict[str, dict[str, Any]]:
    """Oracle ceilings per evaluated data set: ``{data: {task, at_window: {w: {auc, gauc}},
    curve: [...], p_true}}`` (``at_window`` is the ceiling eval.json reports beside each window)."""
    out: dict[str, dict[str, Any]] = {}
    for r in runs:
        orc = r.result.get("oracle")
        if not orc:
            continue
        entry = out.setdefault(
            str(r.result.get("data")),
            {
                "task": None,
                "at_window": {},
                "curve": orc.get("windows", []),
                "p_true": orc.get("p_true"),
            },
        )
        for e in r.result.get("results", []):
            if e.get("oracle"):
                entry["task"] = e["task"]
                entry["at_window"][int(e["window"])] = {
                    k: e["oracle"].get(k) for k in ("window", "auc", "gauc")
                }
    return out


def _fmt_cfg(v: Any) -> str:
    """A config value as written in YAML/JSON (absent: ``-``)."""
    return "-" if v is None else v if isinstance(v, str) else json.dumps(v)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return json.dumps(v) if isinstance(v, list | dict) else str(v)


def build_report(runs: list[RunEval], ignore: tuple[str, ...] = IGNORE) -> dict[str, Any]:
    """Everything ``report.json`` holds (and ``report.md`` and ``report.png`` show)."""
    rows = metric_rows(runs)
    return {
        "runs": [
            {
                "label": r.label,
                "eval_json": str(r.eval_json),
                "config_sources": r.config_sources,
                "checkpoint": r.result.get("checkpoint"),
                "step": r.result.get("step"),
                "data": r.result.get("data"),
                "split": r.result.get("split"),
                "tasks": r.result.get("tasks", []),
            }
            for r in runs
        ],
        "ignored_keys": list(ignore),
        "config_diff": config_diff(runs, ignore),
        "tasks": list(dict.fromkeys(m["task"] for m in rows)),
        "windows": sorted({m["window"] for m in rows}),
        "metrics": rows,
        "oracle": {d: {**o, "at_window": {str(w): v for w, v in o["at_window"].items()}}
                   for d, o in oracle_rows(runs).items()},
    }  # fmt: skip


def markdown(rep: dict[str, Any]) -> str:
    """``report.md``: the runs, their config differences, then a metrics table per task."""
    labels = [r["label"] for r in rep["runs"]]
    lines = ["# Run comparison", "", "| run | step | split | eval.json |", "|---|---|---|---|"]
    lines += [
        f"| {r['label']} | {r['step']} | {r['split']} | {r['eval_json']} |" for r in rep["runs"]
    ]
    lines += ["", "## Config differences", ""]
    if rep["config_diff"]:
        lines += ["| key | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for k, vals in rep["config_diff"].items():
            lines.append(f"| `{k}` | " + " | ".join(_fmt_cfg(vals[lb]) for lb in labels) + " |")
    else:
        lines.append("No differences.")
    lines += ["", "Not compared: " + ", ".join(f"`{p}`" for p in rep["ignored_keys"]) + "."]
    windows = rep["windows"]
    for task in rep["tasks"]:
        by = {(m["run"], m["window"]): m for m in rep["metrics"] if m["task"] == task}
        head = ["run"] + [f"{n}@{w}" for w in windows for n in ("AUC", "GAUC", "log loss")]
        lines += ["", f"## Task `{task}`", "", "| " + " | ".join(head) + " |"]
        lines.append("|---|" + "---:|" * (len(head) - 1))
        for lb in labels:
            cells = [
                _fmt(by.get((lb, w), {}).get(k)) for w in windows for k in ("auc", "gauc", "nll")
            ]
            lines.append(f"| {lb} | " + " | ".join(cells) + " |")
        notes = []
        oracles = [(d, o) for d, o in rep["oracle"].items() if o["task"] == task]
        for d, o in oracles:
            name = "oracle ceiling" + (f" ({Path(d).name})" if len(oracles) > 1 else "")
            at = o["at_window"]
            cells = []
            for w in windows:
                cells += [_fmt(at.get(str(w), {}).get(k)) for k in ("auc", "gauc")] + ["-"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
            p = o.get("p_true") or {}
            notes.append(
                f"- {name}: the oracle's scores with the largest oracle window <= w; with the true "
                f"probabilities (p_true): AUC {_fmt(p.get('auc'))}, GAUC {_fmt(p.get('gauc'))}."
            )
        short = [
            f"{m['run']}@{m['window']}: {m['served_len_mean']:.1f}"
            for m in by.values()
            if m.get("served_len_mean") is not None and m["served_len_mean"] < m["window"] - 1e-9
        ]
        if short:
            notes.append(
                "- Mean events served below the window (shorter histories): " + ", ".join(short)
            )
        lines += [""] + notes if notes else []
    return "\n".join(lines) + "\n"


def write_report(
    inputs: list[str],
    out: str | Path,
    labels: list[str] | None = None,
    extra_ignore: list[str] | None = None,
    plot: bool = True,
) -> tuple[dict[str, Any], str]:
    """Write ``report.md``, ``report.json`` and ``report.png`` into ``out``; return (report, md)."""
    runs = collect(inputs, labels)
    rep = build_report(runs, IGNORE + tuple(extra_ignore or ()))
    md = markdown(rep)
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    (o / "report.md").write_text(md)
    (o / "report.json").write_text(json.dumps(rep, indent=2) + "\n")
    if plot:
        from longseq.report.plot import plot_auc_vs_window

        plot_auc_vs_window(rep, o / "report.png")
    return rep, md
