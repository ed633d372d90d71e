"""``python -m longseq.eval checkpoint=<dir> data.path=<dir> out=<dir> [windows=[...]]``.

Under ``torchrun --nproc-per-node N`` the batches are dealt over N processes, which compute the
metrics together without gathering the predictions (bit-identical to one process).
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig, OmegaConf

from longseq._quiet import quiet_known_warnings
from longseq.config import CONFIG_DIR
from longseq.eval import config as eval_config
from longseq.log import setup_logging

eval_config.register()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    from longseq.eval.evaluate import evaluate

    quiet_known_warnings()
    setup_logging()  # rank from $RANK (torchrun)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        evaluate(OmegaConf.to_object(cfg))
        return
    import torch.distributed

    from longseq.parallel.env import destroy_distributed, init_distributed

    init_distributed()
    try:
        evaluate(OmegaConf.to_object(cfg))
        # every rank has finished its last collective before any rank tears the group down (a
        # sharded evaluation's rank 1 once aborted at exit while rank 0 was destroying it)
        torch.distributed.barrier()
    finally:
        destroy_distributed()
    if cfg.sharded:
        _exit_now()


def _exit_now() -> None:
    """End a finished sharded evaluation without the interpreter's teardown. After its results
    are written, a rank of a sharded (TorchRec) evaluation sometimes aborts in C++ static
    destruction ("terminate called without an active exception": a worker thread still
    joinable), which torchrun reports as a failed job; seen in about 1 of 10 CI runs, cause in
    the libraries not found. Everything of ours is written and closed by then."""
    import logging
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
