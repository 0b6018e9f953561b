"""Entry point: `python -m runner [group=option ...] [key=value ...]` (add -m for a sweep)."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner import app, preflight, schema

schema.register()
log = logging.getLogger("runner")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        app.run(cfg, run_dir, outputs_root=Path("outputs"))
    except (preflight.PreflightError, schema.UnknownKeyError) as error:
        log.error("%s", error)
        sys.exit(2)


if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    main()
