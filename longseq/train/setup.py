"""Everything a training run builds before its first step, in one place: `build`.

In order: the run dir's earlier checkpoints (`longseq.train.guards.prepare_run_dir`), the data
set's meta (tables, tasks), the evaluation checks, the resume checkpoint (verified, its metadata
read as data) and its compatibility (before anything is built: a model that cannot load fails
fast), the seed, the model on the meta device (+ activation checkpointing), `TrainTask`, the
sharded DMP, the optimizers, the input stream, the restored state, ``config.yaml``, the metrics
logger (rows after the start step dropped), the checkpoint meta, the callbacks, the stepper and
the preemption handler. `longseq.train.loop.train` then only loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import OmegaConf

from longseq.data.source import check_split
from longseq.data.stream import BatchStream, build_train_stream
from longseq.log import get_logger
from longseq.model.model import LongSeqModel
from longseq.parallel.ac import apply_activation_checkpointing
from longseq.parallel.checkpoint import load_rank_state, verify_checkpoint
from longseq.parallel.safe_load import read_metadata_file
from longseq.parallel.wrap import shard_model
from longseq.train.callbacks import Callback
from longseq.train.config import TrainJobConfig
from longseq.train.eval_callback import EvalCallback
from longseq.train.guards import (
    check_best_metric,
    check_resume_compatible,
    prepare_run_dir,
)
from longseq.train.logging import MetricsLogger
from longseq.train.optim import build_optimizer
from longseq.train.preemption import Preemption
from longseq.train.progress import param_counts, startup_summary
from longseq.train.resume import restore_training_state
from longseq.train.run_meta import checkpoint_meta, read_dataset_meta, resolve_resume, table_sizes
from longseq.train.stepper import PipelinedStepper, PlainStepper
from longseq.train.task import TrainTask
from longseq.train.train_metrics import WindowedRecMetrics

log = get_logger("longseq.train")


@dataclass
class TrainState:
    """What `build` returns and the loop uses.

    ``start``: the first step to train (the resumed checkpoint's step, or 0); ``ckpt_meta``: what
    every checkpoint's ``longseq.json`` records; ``nonce``: this run's id for temporary
    checkpoint folders; ``rec_metrics``: windowed training AUC/NE (None when
    ``trainer.metrics_window=0``).
    """

    cfg: TrainJobConfig
    env: Any
    run_dir: Path
    dmp: torch.nn.Module
    optimizer: Any
    stream: BatchStream
    stepper: PlainStepper | PipelinedStepper
    logger: MetricsLogger
    ckpt_meta: dict[str, Any]
    nonce: str
    preemption: Preemption
    start: int = 0
    resumed_from: Path | None = None
    rec_metrics: WindowedRecMetrics | None = None
    callbacks: list[Callback] = field(default_factory=list)


def build(
    cfg: TrainJobConfig, env: Any, nonce: str = "", callbacks: list[Callback] | None = None
) -> TrainState:
    """Build everything for training ``cfg`` on this rank (collective: sharding, restore).

    ``cfg`` must have passed `TrainJobConfig.validate`; ``nonce`` comes from the run-dir lock
    (`longseq.train.guards.lock_run_dir`); ``callbacks`` run before the evaluation callback."""
    run_dir = Path(cfg.run_dir)
    check_split(cfg.data.path, cfg.data.split)  # before anything in the run dir is touched
    prepare_run_dir(cfg, env.is_main)  # earlier checkpoints: resume=auto or overwrite=true
    meta = read_dataset_meta(cfg.data.path)
    tasks = meta.model_tasks
    sizes = table_sizes(meta)
    features = meta.features if cfg.model.use_features else ()
    tc = cfg.trainer
    eval_every, select_split = tc.resolved_eval(cfg.data.path)
    if eval_every > 0:
        check_split(cfg.data.path, select_split, "trainer.select_split")
        if select_split == tc.eval_split:
            log.warning(
                f"checkpoints/best is chosen on trainer.eval_split={tc.eval_split}, the split "
                "the final evaluation reports: the data set has no valid split (synthetic data: "
                "longseq.datasets.synth valid_fraction=<f>) or trainer.select_split says so"
            )
    if eval_every > 0 or tc.eval_at_end:
        if tc.eval_at_end:
            check_split(cfg.data.path, tc.eval_split, "trainer.eval_split")
        check_best_metric(tc, tasks)
    ckpt = resolve_resume(cfg)
    if ckpt is not None:  # before building anything: a checkpoint that cannot load fails fast
        now = checkpoint_meta(cfg, sizes, tasks, env.world_size, features=features)
        saved = verify_checkpoint(ckpt)  # longseq.json checked, no links, every file whole
        read_metadata_file(ckpt / ".metadata")  # read as data, on every rank
        check_resume_compatible(ckpt, saved, now, type(cfg.model))
    torch.manual_seed(cfg.seed)
    model = LongSeqModel(cfg.model, sizes, tasks, device="meta", features=features)
    apply_activation_checkpointing(model, tc.activation_checkpointing)
    task = TrainTask(model, tc.precision, env.device.type)
    params = param_counts(model)
    dmp = shard_model(task, cfg.sharding, env.device)
    opt = build_optimizer(dmp, tc.dense)
    if cfg.data.on_bad_row == "skip" and not cfg.data.bad_rows_log:  # skipped rows: on record
        cfg.data.bad_rows_log = str(run_dir / f"bad_rows.rank{env.rank}.jsonl")
    stream = build_train_stream(
        cfg.data, env.rank, env.world_size, cfg.seed, tasks, env.device, features
    )
    start, wandb_id = 0, None
    if ckpt is not None:
        cmeta = restore_training_state(dmp, opt, ckpt)
        start, wandb_id = int(cmeta["step"]), cmeta.get("wandb_run_id")
        rstate = load_rank_state(ckpt, env.rank)
        if rstate is not None and cmeta.get("world_size") == env.world_size:
            stream.load_position(rstate)
        log.info(f"resumed from {ckpt} at step {start}")
    if env.is_main:
        OmegaConf.save(OmegaConf.structured(cfg), run_dir / "config.yaml")
        log.info(startup_summary(cfg, env, meta, sizes, params, start))
    logger = MetricsLogger(
        run_dir,
        env.is_main,
        cfg.wandb.mode,
        cfg.wandb.project,
        cfg.wandb.entity,
        run_id=wandb_id,
        config=cast(dict[str, Any], OmegaConf.to_container(OmegaConf.structured(cfg))),
        name=cfg.name,
        tensorboard=tc.tensorboard,
    )
    if logger.drop_after(start):  # rows a crashed or earlier run logged after this start
        log.info(f"metrics.jsonl: removed rows after step {start}")
    all_callbacks: list[Callback] = list(callbacks or [])
    if eval_every > 0 or tc.eval_at_end:
        all_callbacks.append(
            EvalCallback(
                cfg.data.path,
                tc.eval_windows,
                eval_every,
                tc.eval_at_end,
                tc.eval_split,
                logger=logger,
                rank=env.rank,
                best_metric=tc.best_metric,
                run_dir=str(run_dir),
                select_split=select_split,
                patience=tc.early_stop_patience,
                start=start,
            )
        )
        if eval_every > 0 and env.is_main:
            stop = tc.early_stop_patience
            log.info(
                f"evaluating every {eval_every} steps on {select_split} (checkpoints/best: "
                f"{tc.best_metric or 'AUC of the first task at the largest window'}); "
                + (
                    f"early stop after {stop} evaluations without a new best"
                    if stop
                    else "no early stop"
                )
            )
    stepper: PlainStepper | PipelinedStepper
    if tc.pipeline:
        stepper = PipelinedStepper(dmp, opt, stream, env.device)
    else:
        stepper = PlainStepper(dmp, opt, stream)
    rec = None
    if tc.metrics_window > 0:
        rec = WindowedRecMetrics(tasks, tc.metrics_window, env.world_size, env.rank, env.device)
    return TrainState(
        cfg=cfg,
        env=env,
        run_dir=run_dir,
        dmp=dmp,
        optimizer=opt,
        stream=stream,
        stepper=stepper,
        logger=logger,
        ckpt_meta=checkpoint_meta(
            cfg, sizes, tasks, env.world_size, logger.run_id, features=features
        ),
        nonce=nonce,
        preemption=Preemption(),
        start=start,
        resumed_from=ckpt,
        rec_metrics=rec,
        callbacks=all_callbacks,
    )
