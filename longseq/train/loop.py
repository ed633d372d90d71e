"""The training loop: one loop for every setup (1..N processes, RLB or pointwise, CPU or GPU)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from tqdm import tqdm

from longseq.data.stream import build_train_stream
from longseq.model.embeddings import TableSizes
from longseq.model.model import LongSeqModel
from longseq.parallel.ac import apply_activation_checkpointing
from longseq.parallel.checkpoint import (
    latest_checkpoint,
    load_rank_state,
    read_checkpoint_meta,
    save_checkpoint,
)
from longseq.parallel.env import init_distributed
from longseq.parallel.pointers import resolve_checkpoint
from longseq.parallel.wrap import shard_model
from longseq.train.callbacks import Callback, LoopState
from longseq.train.config import TrainJobConfig
from longseq.train.eval_callback import EvalCallback
from longseq.train.guards import (
    check_best_metric,
    check_resume_compatible,
    check_split,
    lock_run_dir,
)
from longseq.train.logging import MetricsLogger
from longseq.train.optim import build_optimizer, lr_factor, set_dense_lr
from longseq.train.profiling import maybe_profiler
from longseq.train.resume import restore_training_state, training_state
from longseq.train.stepper import PipelinedStepper, PlainStepper
from longseq.train.task import TrainTask

log = logging.getLogger("longseq.train")


def read_dataset_meta(path: str | Path) -> dict[str, Any]:
    """The data set's ``meta.json`` (vocabulary sizes and tasks), with a clear error."""
    f = Path(path) / "meta.json"
    if not f.is_file():
        raise FileNotFoundError(
            f"{f} not found: data.path must be a longseq data set folder "
            "(python -m longseq.datasets.synth writes one)"
        )
    return json.loads(f.read_text())


def table_sizes(meta: dict[str, Any]) -> TableSizes:
    """TableSizes from ``meta.json``."""
    try:
        return TableSizes(
            int(meta["num_items"]), int(meta["num_categories"]), int(meta["num_actions"])
        )
    except KeyError as e:
        raise KeyError(f"meta.json lacks {e.args[0]!r}") from None


def checkpoint_meta(
    cfg: TrainJobConfig,
    sizes: TableSizes,
    tasks: list[str],
    world_size: int,
    wandb_run_id: str | None = None,
) -> dict[str, Any]:
    """What a checkpoint's ``longseq.json`` describes (besides its step): enough for
    ``longseq.eval`` to rebuild the model without the training config."""
    return {
        "model": OmegaConf.to_container(OmegaConf.structured(cfg.model)),
        "tables": asdict(sizes),
        "tasks": tasks,
        "world_size": world_size,
        "data_path": str(cfg.data.path),
        "window": asdict(cfg.data.window),
        "pointwise": cfg.data.pointwise,
        "wandb_run_id": wandb_run_id,
    }


class _Preemption:
    """SIGTERM/SIGUSR1 set a flag; the loop checkpoints and exits at the next step boundary."""

    def __init__(self) -> None:
        self.flag = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: object) -> None:
        self.flag = True

    def agreed(self) -> bool:
        t = torch.tensor([1.0 if self.flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)


def _resolve_resume(cfg: TrainJobConfig) -> Path | None:
    if cfg.resume in ("none", "", None):
        return None
    if cfg.resume == "auto":
        return latest_checkpoint(cfg.run_dir)
    try:
        return resolve_checkpoint(cfg.resume)  # a step folder or a latest/best pointer file
    except FileNotFoundError:
        raise FileNotFoundError(f"resume={cfg.resume}: not a complete checkpoint") from None


def train(cfg: TrainJobConfig, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train per ``cfg``; returns the last logged values. Collective over all ranks.

    Rank 0 holds the run-dir lock (`longseq.parallel.run_lock`) for the whole job."""
    env = init_distributed()
    cfg.trainer.validate(env.device.type)
    lock, nonce = lock_run_dir(Path(cfg.run_dir), env.is_main)
    try:
        return _train(cfg, env, nonce, callbacks)
    finally:
        if lock is not None:
            lock.release()


def _train(
    cfg: TrainJobConfig, env: Any, nonce: str, callbacks: list[Callback] | None
) -> dict[str, Any]:
    run_dir = Path(cfg.run_dir)
    meta = read_dataset_meta(cfg.data.path)
    tasks = list(meta.get("tasks", ["click"]))
    sizes = table_sizes(meta)
    cfg.data.window.validate("data.window")
    cfg.sharding.validate(env.device.type)
    tc = cfg.trainer
    if tc.eval_every > 0 or tc.eval_at_end:
        check_split(cfg.data.path, tc.eval_split, "trainer.eval_split")
        check_best_metric(tc, tasks)
    ckpt = _resolve_resume(cfg)
    if ckpt is not None:  # before building anything: a model that cannot load fails fast
        now = checkpoint_meta(cfg, sizes, tasks, env.world_size)
        check_resume_compatible(ckpt, read_checkpoint_meta(ckpt), now, type(cfg.model))
    torch.manual_seed(cfg.seed)
    model = LongSeqModel(cfg.model, sizes, tasks, device="meta")
    apply_activation_checkpointing(model, cfg.trainer.activation_checkpointing)
    task = TrainTask(model, cfg.trainer.precision, env.device.type)
    dmp = shard_model(task, cfg.sharding, env.device)
    opt = build_optimizer(dmp, cfg.trainer.dense)
    if cfg.data.on_bad_row == "skip" and not cfg.data.bad_rows_log:  # skipped rows: on record
        cfg.data.bad_rows_log = str(run_dir / f"bad_rows.rank{env.rank}.jsonl")
    stream = build_train_stream(cfg.data, env.rank, env.world_size, cfg.seed, tasks, env.device)
    start, wandb_id = 0, None
    if ckpt is not None:
        cmeta = restore_training_state(dmp, opt, ckpt)
        start, wandb_id = int(cmeta["step"]), cmeta.get("wandb_run_id")
        rstate = load_rank_state(ckpt, env.rank)
        if rstate is not None and cmeta.get("world_size") == env.world_size:
            stream.load_position(rstate)
        if env.is_main:
            print(f"[longseq] resumed from {ckpt} at step {start}", file=sys.stderr, flush=True)
    if env.is_main:
        OmegaConf.save(OmegaConf.structured(cfg), run_dir / "config.yaml")
    logger = MetricsLogger(
        run_dir,
        env.is_main,
        cfg.wandb.mode,
        cfg.wandb.project,
        cfg.wandb.entity,
        run_id=wandb_id,
        config=OmegaConf.to_container(OmegaConf.structured(cfg)),
        name=cfg.name,
    )
    if logger.drop_after(start):  # rows a crashed or earlier run logged after this start
        print(f"[longseq] metrics.jsonl: removed rows after step {start}", file=sys.stderr)
    ckpt_meta = checkpoint_meta(cfg, sizes, tasks, env.world_size, logger.run_id)
    callbacks = list(callbacks or [])
    if tc.eval_every > 0 or tc.eval_at_end:
        callbacks.append(
            EvalCallback(
                cfg.data.path,
                tc.eval_windows,
                tc.eval_every,
                tc.eval_at_end,
                tc.eval_split,
                logger=logger,
                rank=env.rank,
                best_metric=tc.best_metric,
                run_dir=str(run_dir),
            )
        )
    preempt = _Preemption()
    bar = tqdm(
        total=tc.max_steps,
        initial=start,
        disable=not (env.is_main and tc.progress),
        desc="train",
        unit="step",
        file=sys.stderr,
        dynamic_ncols=True,
    )
    if tc.pipeline:
        stepper = PipelinedStepper(dmp, opt, stream, env.device)
    else:
        stepper = PlainStepper(dmp, opt, stream)
    # loss*targets, targets, requests, hist ids, all ids, requests read since the start
    acc = torch.zeros(6, dtype=torch.float64)
    t0, values, last_ckpt = time.perf_counter(), {}, None
    dmp.train()
    with maybe_profiler(tc.profile, str(run_dir), env.rank) as prof:
        for step in range(start, tc.max_steps):
            prof.step()
            set_dense_lr(opt, tc.dense.lr * lr_factor(step, tc.max_steps, tc.dense))
            c = stepper.step()  # [loss, targets, requests, hist ids, input ids]
            acc[:5] += torch.stack([c[0] * c[1], c[1], c[2], c[3], c[4]])
            if step == start and tc.pipeline and stepper.pipelined_modules() == 0:
                raise RuntimeError(
                    "trainer.pipeline=true but TrainPipelineSparseDist pipelines no sharded module "
                    "(it fell back to no overlap); fix the model or set trainer.pipeline=false"
                )
            bar.update(1)
            done = step + 1
            if done % tc.log_every == 0 or done == tc.max_steps:
                # exact, across resumes: rows of the batches trained so far (not the prefetched ones)
                acc[5] = stream.position_after(done - start)["reader"]["rows_emitted"]
                dist.all_reduce(acc)
                dt = time.perf_counter() - t0
                values = {
                    "loss": acc[0].item() / max(acc[1].item(), 1),
                    "lr": tc.dense.lr * lr_factor(step, tc.max_steps, tc.dense),
                    "targets_per_s": acc[1].item() / dt,
                    "requests_per_s": acc[2].item() / dt,
                    "input_ids_per_target": acc[4].item() / max(acc[1].item(), 1),
                    "hist_ids_per_target": acc[3].item() / max(acc[1].item(), 1),
                    "requests_seen": int(acc[5].item()),
                }
                logger.log(done, values)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                acc.zero_()
                t0 = time.perf_counter()
            stop = preempt.agreed()
            last_ckpt = None
            if done % tc.checkpoint_every == 0 or done == tc.max_steps or stop:
                rank_state = stream.position_after(done - start)
                last_ckpt = str(
                    save_checkpoint(
                        run_dir,
                        done,
                        training_state(dmp, opt),
                        ckpt_meta,
                        rank_state,
                        keep_last=tc.keep_last,
                        nonce=nonce,
                    )
                )
            state = LoopState(done, tc.max_steps, str(run_dir), values, last_ckpt)
            for cb in callbacks:
                cb.on_step_end(state)
            if stop:
                if env.is_main:
                    print(f"[longseq] preempted: checkpointed step {done}", file=sys.stderr)
                break
    bar.close()
    for cb in callbacks:
        cb.on_train_end(LoopState(tc.max_steps, tc.max_steps, str(run_dir), values, last_ckpt))
    logger.close()
    return values
