"""``python -m longseq.train.plan_table [experiment=default] [worlds=[8,64,256]] [out=...]``:
TorchRec's planner over declared clusters, as a page (docs/planning.md).

The entry point: it composes the training experiment (``experiment=<name>``, as
``python -m longseq.train`` would) and hands it to `longseq.parallel.planning.plan_table`, which
plans and writes the page. No GPU and no data set are needed.
"""

from __future__ import annotations

from typing import cast

from longseq.parallel.planning.plan_table import PlanTableConfig, check, plan_table
from longseq.train.config import TrainJobConfig, register


def compose_job(experiment: str) -> TrainJobConfig:
    """The training job ``experiment=<name>`` describes (placeholders for the paths)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from longseq.config import CONFIG_DIR

    register()
    overrides = [f"experiment={experiment}", "data.path=unused", "run_dir=unused"]
    if GlobalHydra.instance().is_initialized():  # inside an entry point: same config folder
        job = cast(TrainJobConfig, OmegaConf.to_object(compose("train", overrides=overrides)))
    else:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            job = cast(TrainJobConfig, OmegaConf.to_object(compose("train", overrides=overrides)))
    job.sharding.planner = True
    return job


def run(cfg: PlanTableConfig) -> str:
    """Plan ``cfg.experiment``'s model for every data set at every world size with TorchRec's
    planner; return (and write to ``cfg.out``, when set) the markdown."""
    check(cfg)  # before composing: a bad argument fails fast
    return plan_table(cfg, compose_job(cfg.experiment))


def _main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import DictConfig, OmegaConf

    from longseq._quiet import quiet_known_warnings
    from longseq.config import CONFIG_DIR

    ConfigStore.instance().store(name="plan_table_schema", node=PlanTableConfig)

    @hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="plan_table")
    def main(conf: DictConfig) -> None:
        quiet_known_warnings()
        text = run(cast(PlanTableConfig, OmegaConf.to_object(conf)))
        print(text if not conf.out else f"wrote {conf.out}", flush=True)

    main()


if __name__ == "__main__":
    _main()
