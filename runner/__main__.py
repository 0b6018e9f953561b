"""Entry point: `python -m runner [group=option ...] [key=value ...]` (add -m for a sweep)."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner import app, preflight, schema, sweep, tracking

schema.register()
log = logging.getLogger("runner")
OUTPUTS_ROOT = Path("outputs")
CONFIG_ERRORS = (preflight.PreflightError, schema.UnknownKeyError)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> str:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    tags = sweep.job_tags(list(hydra_cfg.overrides.task))
    parent = sweep.current()["parent_run_id"]
    try:
        app.run(cfg, run_dir, outputs_root=OUTPUTS_ROOT, parent_run_id=parent, tags=tags)
        return "finished"
    except Exception as error:
        if isinstance(error, CONFIG_ERRORS + (app.RunIncomplete,)):
            log.error("%s", error)
        else:
            location = app.run_location(OmegaConf.to_container(cfg, resolve=True), run_dir, OUTPUTS_ROOT)
            log.exception("the run failed; rows already written are kept. Finish it with: %s", app.resume_command(location))
        if not in_sweep:
            sys.exit(2 if isinstance(error, CONFIG_ERRORS) else 1)
        # One failed job must not end the sweep: record it and let the next one run.
        _record_failure(cfg, error, parent, tags)
        return "failed"


def _record_failure(cfg: DictConfig, error: Exception, parent, tags) -> None:
    if not cfg.tracking.enabled:
        return
    try:
        tracking.log_failed_run(OmegaConf.to_container(cfg, resolve=True), OUTPUTS_ROOT, f"{type(error).__name__}: {error}", parent, tags)
    except Exception as tracking_error:  # noqa: BLE001
        log.error("tracking: could not record the failed job (%s)", tracking_error)


if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    main()
