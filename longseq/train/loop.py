"""The training loop: one loop for every setup (1..N processes, RLB or pointwise, CPU or GPU).

`train` validates the config, takes the run-dir lock, lets `longseq.train.setup.build` build
everything, then loops: step, log (every ``trainer.log_every`` steps: one all-reduce of the
window's counters, which also carries the preemption flag), checkpoint, callbacks, preemption.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from longseq.log import get_logger
from longseq.parallel.checkpoint import save_checkpoint
from longseq.parallel.env import init_distributed
from longseq.train.callbacks import Callback, LoopState
from longseq.train.config import TrainJobConfig
from longseq.train.guards import lock_run_dir
from longseq.train.optim import learning_rates, lr_factor, set_dense_lr
from longseq.train.profiling import maybe_profiler
from longseq.train.progress import Progress
from longseq.train.resume import training_state
from longseq.train.run_meta import (  # noqa: F401 - importable from here as before
    checkpoint_meta,
    read_dataset_meta,
    resolve_resume,
    table_sizes,
)
from longseq.train.setup import TrainState, build
from longseq.train.train_metrics import peak_memory_mib

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
        progress = Progress(s.start, tc.max_steps, env.is_main, tc.progress)
        # loss*targets, targets, requests, hist ids, all ids, requests read, preemption flags
        acc = torch.zeros(7, dtype=torch.float64)
        t0, values, last_ckpt, final_ckpt = time.perf_counter(), {}, None, None
        s.dmp.train()
        with maybe_profiler(tc.profile, run_dir, env.rank) as prof:
            for step in range(s.start, tc.max_steps):
                prof.step()
                set_dense_lr(s.optimizer, tc.dense.lr * lr_factor(step, tc.max_steps, tc.dense))
                c = s.stepper.step()  # [loss, targets, requests, hist ids, input ids]
                acc[:5] += torch.stack([c[0] * c[1], c[1], c[2], c[3], c[4]])
                if s.rec_metrics is not None:
                    s.rec_metrics.update(*s.stepper.last_predictions)
                if step == s.start:
                    _check_pipelined(s)
                progress.update()
                done, stop = step + 1, False
                logs = done % tc.log_every == 0 or done == tc.max_steps
                if logs:
                    # exact, across resumes: rows of the batches trained so far (not prefetched)
                    acc[5] = s.stream.position_after(done - s.start)["reader"]["rows_emitted"]
                    acc[6] = s.preemption.local()
                    acc = _all_reduce(acc, env.device)
                    stop = acc[6].item() > 0
                    values = _values(s, acc, step, time.perf_counter() - t0)
                    s.logger.log(done, values)
                    progress.logged(done, values)
                    acc.zero_()
                    t0 = time.perf_counter()
                checkpoints = done % tc.checkpoint_every == 0 or done == tc.max_steps
                if checkpoints and not logs:  # ranks agree here too: they checkpoint together
                    stop = s.preemption.agreed(env.device)
                last_ckpt = _checkpoint(s, done) if checkpoints or stop else None
                final_ckpt = last_ckpt or final_ckpt
                state = LoopState(done, tc.max_steps, run_dir, values, last_ckpt)
                for cb in s.callbacks:
                    cb.on_step_end(state)
                if stop:
                    log.info(f"preempted: checkpointed step {done}")
                    break
        progress.close()
        for cb in s.callbacks:
            cb.on_train_end(LoopState(tc.max_steps, tc.max_steps, run_dir, values, last_ckpt))
        s.logger.close()
        log.info(f"done: last checkpoint {final_ckpt}; metrics {s.run_dir / 'metrics.jsonl'}")
        return values
    finally:
        if lock is not None:
            lock.release()


def _all_reduce(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum ``t`` (a CPU tensor) over the ranks, through ``device`` (NCCL reduces CUDA tensors)."""
    if not dist.is_initialized():
        return t
    on = t.to(device)
    dist.all_reduce(on)
    return on.cpu()


def _check_pipelined(s: TrainState) -> None:
    if s.cfg.trainer.pipeline and s.stepper.pipelined_modules() == 0:
        raise RuntimeError(
            "trainer.pipeline=true but TrainPipelineSparseDist pipelines no sharded module "
            "(it fell back to no overlap); fix the model or set trainer.pipeline=false"
        )


def _values(s: TrainState, acc: torch.Tensor, step: int, dt: float) -> dict[str, Any]:
    """The logged values of a window of steps (collective: the training AUC/NE gather)."""
    tc = s.cfg.trainer
    targets = max(acc[1].item(), 1)
    values = {
        "loss": acc[0].item() / targets,
        "lr": tc.dense.lr * lr_factor(step, tc.max_steps, tc.dense),
        **learning_rates(s.optimizer),
        "targets_per_s": acc[1].item() / dt,
        "requests_per_s": acc[2].item() / dt,
        "tokens_per_s": (acc[3].item() + acc[1].item()) / dt,
        "input_ids_per_target": acc[4].item() / targets,
        "hist_ids_per_target": acc[3].item() / targets,
        "requests_seen": int(acc[5].item()),
    }
    grad_norm = s.optimizer.pop_grad_norm()
    if grad_norm is not None:
        values["grad_norm"] = grad_norm
    if s.rec_metrics is not None:
        values.update(s.rec_metrics.compute())
    values.update(peak_memory_mib(s.env.device))
    return values


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
