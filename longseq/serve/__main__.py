"""``python -m longseq.serve checkpoint=<dir> data.path=<dir> out=<dir> [window=N]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from longseq._quiet import quiet_known_warnings
from longseq.config import CONFIG_DIR
from longseq.log import setup_logging
from longseq.serve import config as serve_config

serve_config.register()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="serve")
def main(cfg: DictConfig) -> None:
    from longseq.serve.run import serve

    quiet_known_warnings()
    setup_logging()
    serve(OmegaConf.to_object(cfg))


if __name__ == "__main__":
    main()
