"""Offline evaluation: metrics per task and served window, beside the oracle's ceilings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from longseq.data.source import check_split
from longseq.data.windows import served_windows
from longseq.eval.config import EvalConfig
from longseq.eval.load import load_model, resolve_checkpoint
from longseq.eval.predict import predict
from longseq.eval.window import window_metrics
from longseq.log import get_logger

log = get_logger("longseq.eval")


def load_oracle(data_path: str | Path) -> dict[str, Any] | None:
    """The data set's ``oracle.json`` (synthetic data only), or None."""
    f = Path(data_path) / "oracle.json"
    return json.loads(f.read_text()) if f.is_file() else None


def oracle_at(oracle: dict[str, Any] | None, window: int) -> dict[str, float] | None:
    """The oracle ceiling for the largest oracle window <= ``window`` (capped at the data's max)."""
    if not oracle:
        return None
    w = min(window, int(oracle["hist_len_max"]))
    cands = [e for e in oracle["windows"] if int(e["window"]) <= w]
    return max(cands, key=lambda e: int(e["window"])) if cands else None


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown_table(result: dict[str, Any]) -> str:
    """The human-readable table printed on stdout and written to ``eval.md``."""
    orc = result.get("oracle") or {}
    short = orc.get("short_window")
    head = [
        "window",
        "served (mean)",
        "task",
        "AUC",
        "GAUC",
        "log loss",
        "calib.",
        "oracle AUC@w",
        "oracle GAUC@w",
    ]
    if short:
        head += [f"oracle AUC@{short['window']}"]
    head += ["oracle AUC (p_true)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["results"]:
        o = r.get("oracle") or {}
        row = [
            str(r["window"]),
            f"{r['served_len_mean']:.0f}",
            r["task"],
            _fmt(r["auc"]),
            _fmt(r["gauc"]),
            _fmt(r["nll"]),
            _fmt(r["calibration"]),
            _fmt(o.get("auc")),
            _fmt(o.get("gauc")),
        ]
        if short:
            row.append(_fmt(short["auc"]))
        row.append(_fmt((orc.get("p_true") or {}).get("auc")))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate ``cfg.checkpoint`` on ``cfg.data`` at every window; write outputs to ``cfg.out``.

    Under torchrun (an initialised process group) the batches are dealt over the ranks; each
    rank keeps its own predictions and the metrics are computed collectively
    (`longseq.eval.dist_metrics`, no rank holds all predictions), bit-identical to a one-process
    run. Rank 0 writes ``eval.json``, ``eval.md`` and the plot; with ``save_predictions`` every
    rank writes its part of ``predictions.parquet/``. Returns the result on rank 0, ``{}``
    elsewhere. When ``cfg.out`` lies inside a run dir, its lock is held while evaluating
    (`longseq.parallel.run_lock.writing_inside`): refused while another job holds it.

    The entry point of an evaluation job: validates ``cfg`` (`EvalConfig.validate`) once, then
    runs `evaluate_validated`.
    """
    cfg.validate()
    return evaluate_validated(cfg)


def evaluate_validated(cfg: EvalConfig) -> dict[str, Any]:
    """`evaluate` for a ``cfg`` whose settings its caller's entry point validated (the training
    loop's evaluation callback: ``trainer.eval_*`` were checked by `TrainJobConfig.validate`)."""
    from longseq.parallel.run_lock import writing_inside

    rank, world = _rank_world()
    with writing_inside(cfg.out, "out", is_main=rank == 0):  # not into a run dir in use
        return _evaluate(cfg, rank, world)


def _evaluate(cfg: EvalConfig, rank: int, world: int) -> dict[str, Any]:
    """`evaluate` after its argument checks, with ``out`` locked if inside a run dir."""
    from longseq.eval.ids import check_ids
    from longseq.parallel.checkpoint import verify_checkpoint

    ckpt = resolve_checkpoint(cfg.checkpoint)
    meta = verify_checkpoint(ckpt)  # longseq.json parsed, every file of the manifest present
    split_dir = check_split(cfg.data.path, cfg.data.split)
    check_ids(split_dir, meta["tables"])
    if cfg.sharded and world > 1:
        from longseq.eval.load import load_sharded_model

        model = load_sharded_model(ckpt, meta, cfg.sharding_tables)
        device = (
            torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        )
    elif cfg.sharded:
        raise ValueError("sharded=true needs several processes: run it under torchrun")
    else:
        model, device = load_model(ckpt, meta), None
    oracle = load_oracle(cfg.data.path) if cfg.data.split == "test" else None
    windows = served_windows(list(cfg.windows))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    writer = None
    if cfg.save_predictions:
        from longseq.eval.predictions_io import PredictionWriter, prepare_folder

        if rank == 0:
            prepare_folder(out / "predictions.parquet")
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # the folder is empty before any rank writes
        writer = PredictionWriter(out / "predictions.parquet", rank, model.tasks)
    for w in windows:
        p = predict(
            model,
            split_dir,
            w,
            cfg.data.batch_size,
            rank,
            world,
            progress=cfg.progress and rank == 0,
            desc=f"eval w={w or 'full'}",
            lockstep=cfg.sharded,
            device=device,
        )
        if world > 1:
            from longseq.eval.dist_metrics import dist_window_metrics

            rows = dist_window_metrics(p, model.tasks)  # collective; the same rows on every rank
        else:
            rows = window_metrics(p, model.tasks)
        for r in rows:
            served = w if w is not None else r["served_len_max"]
            r["window"] = served
            r["oracle"] = (
                oracle_at(oracle, served) if r["task"] == (oracle or {}).get("task") else None
            )
            results.append(r)
        if writer is not None:
            writer.write(w, p)
        del p
    if writer is not None:
        writer.close()
    if rank != 0:
        return {}
    result = {
        "checkpoint": str(ckpt),
        "world_size": world,
        "sharded": cfg.sharded,
        "step": meta.get("step"),
        "data": str(cfg.data.path),
        "split": cfg.data.split,
        "tasks": model.tasks,
        "train_window": meta.get("window"),
        "results": results,
        "oracle": None
        if oracle is None
        else {
            "p_true": oracle["p_true"],
            "short_window": min(oracle["windows"], key=lambda e: e["window"]),
            "windows": oracle["windows"],
        },
    }
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    table = markdown_table(result)
    (out / "eval.md").write_text(table + "\n")
    print(table, flush=True)
    try:
        from longseq.eval.plots import plot_auc_vs_window

        plot_auc_vs_window(result, out / "auc_vs_window.png")
    except Exception as e:  # a plot must never lose the numbers
        log.warning(f"plot skipped: {e}")
    return result
