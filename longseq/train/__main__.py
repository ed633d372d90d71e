"""``torchrun ... -m longseq.train experiment=<name> data.path=<dir> run_dir=<dir> [k=v ...]``.

Also runs as ``python -m longseq.train ...`` with one process.
"""

from __future__ import annotations

from typing import cast

import hydra
from omegaconf import DictConfig, OmegaConf

from longseq._quiet import quiet_known_warnings
from longseq.config import CONFIG_DIR
from longseq.log import setup_logging
from longseq.train import config as train_config

train_config.register()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    from longseq.parallel.env import destroy_distributed
    from longseq.train.loop import train

    quiet_known_warnings()
    setup_logging()  # rank from $RANK (torchrun); rank 0 logs status lines, others warnings
    job = cast(train_config.TrainJobConfig, OmegaConf.to_object(cfg))
    if job.dry_run:
        from longseq.parallel.planning.dry_run import dry_run
        from longseq.train.run_meta import read_dataset_meta, table_sizes

        job.validate(job.dry_run_topology.compute_device)  # the planned cluster's device
        meta = read_dataset_meta(job.data.path)
        sizes, tasks = table_sizes(meta), meta.model_tasks
        report = dry_run(
            job.model, job.sharding, job.dry_run_topology, sizes, tasks, features=meta.features
        )
        print(report)
        return
    try:
        train(job)
    finally:
        destroy_distributed()


if __name__ == "__main__":
    main()
