"""``python -m longseq.eval checkpoint=<dir> data.path=<dir> out=<dir> [windows=[...]]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from longseq._quiet import quiet_known_warnings
from longseq.config import CONFIG_DIR
from longseq.eval import config as eval_config

eval_config.register()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    from longseq.eval.evaluate import evaluate

    quiet_known_warnings()

    evaluate(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
