"""The training loop: one loop for every setup (1..N processes, RLB or pointwise, CPU or GPU).

`train` validates the config, takes the run-dir lock, lets `longseq.train.setup.build` build
everything, then loops: step, log (`longseq.train.metrics_processor.MetricsProcessor`: every
``trainer.log_every`` steps one all-reduce of the window's named counters, which also carries the
preemption flag), checkpoint, callbacks, preemption.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longseq.log import get_logger
from longseq.parallel.checkpoint import save_checkpoint
from longseq.parallel.env import init_distributed
from longseq.train.callbacks import Callback, LoopState
from longseq.train.config import TrainJobConfig
from longseq.train.guards import lock_run_dir
from longseq.train.metrics_processor import MetricsProcessor
from longseq.train.optim import lr_factor, set_dense_lr
from longseq.train.profiling import maybe_profiler
from longseq.train.resume import training_state
from longseq.train.run_meta import (  # noqa: F401 - importable from here as before
    checkpoint_meta,
    read_dataset_meta,
    resolve_resume,
    table_sizes,
)
from longseq.train.setup import TrainState, build

log = get_logger("longseq.train")


def train(cfg: TrainJobConfig, callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Train per ``cfg``; returns the last logged values. Collective over all ranks.

    Rank 0 holds the run-dir lock (`longseq.parallel.run_lock`) for the whole job. SIGTERM or
    SIGUSR1 stop the run at the next log or checkpoint step, with a checkpoint of that step
    (`longseq.train.preemption`)."""
    env = init_distributed()
    cfg.validate(env.device.type)
    lock, nonce = lock_run_dir(Path(cfg.run_dir), env.is_main)
    try:
        s = build(cfg, env, nonce, callbacks)
        tc, run_dir = cfg.trainer, str(s.run_dir)
        metrics = MetricsProcessor(s)
        last_ckpt, final_ckpt, done = None, None, s.start
        s.dmp.train()
        with maybe_profiler(tc.profile, run_dir, env.rank) as prof:
            for step in range(s.start, tc.max_steps):
                prof.step()
                set_dense_lr(s.optimizer, tc.dense.lr * lr_factor(step, tc.max_steps, tc.dense))
                metrics.record(s.stepper.step(), s.stepper.last_predictions)
                if step == s.start:
                    _check_pipelined(s)
                done = step + 1
                logs = metrics.should_log(done)
                stop = metrics.log(done) if logs else False  # the log all-reduce carries the flag
                checkpoints = done % tc.checkpoint_every == 0 or done == tc.max_steps
                if checkpoints and not logs:  # ranks agree here too: they checkpoint together
                    stop = s.preemption.agreed(env.device)
                last_ckpt = _checkpoint(s, done) if checkpoints or stop else None
                final_ckpt = last_ckpt or final_ckpt
                state = LoopState(done, tc.max_steps, run_dir, metrics.values, last_ckpt)
                for cb in s.callbacks:
                    cb.on_step_end(state)
                if stop:
                    log.info(f"preempted: checkpointed step {done}")
                    break
                if state.stop:  # e.g. early stopping (every rank got the same decision)
                    log.info(state.stop)
                    break
        metrics.close()
        end = LoopState(done, tc.max_steps, run_dir, metrics.values, final_ckpt)
        for cb in s.callbacks:
            cb.on_train_end(end)
        s.logger.close()
        log.info(f"done: last checkpoint {final_ckpt}; metrics {s.run_dir / 'metrics.jsonl'}")
        return metrics.values
    finally:
        if lock is not None:
            lock.release()


def _check_pipelined(s: TrainState) -> None:
    if s.cfg.trainer.pipeline and s.stepper.pipelined_modules() == 0:
        raise RuntimeError(
            "trainer.pipeline=true but TrainPipelineSparseDist pipelines no sharded module "
            "(it fell back to no overlap); fix the model or set trainer.pipeline=false"
        )


def _checkpoint(s: TrainState, done: int) -> str:
    """Save step ``done`` (model, optimizers, each rank's stream position)."""
    path = save_checkpoint(
        s.run_dir,
        done,
        training_state(s.dmp, s.optimizer),
        s.ckpt_meta,
        s.stream.position_after(done - s.start),
        keep_last=s.cfg.trainer.keep_last,
        nonce=s.nonce,
    )
    return str(path)
