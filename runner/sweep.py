"""Multirun bookkeeping: one MLflow parent run per sweep, its jobs nested under it.

A Hydra callback (registered in conf/config.yaml) opens the parent run when a multirun
starts and closes it, with the comparison table and plot, when the last job ends. Each
sweep gets a fresh id, so a re-run sweep never mixes with an old one.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner import faults, tracking, warm_engine
from runner.schema import TrackingConfig

log = logging.getLogger(__name__)

SWEEP_ID_ENV = "RUNNER_SWEEP_ID"
# This process's sweep so far, or the last one that ended: its jobs that ended and how many
# failed (runner.__main__'s exit code and what it says when a sweep is interrupted).
last_sweep = {"jobs": 0, "failed": 0}
PARENT_RUN_ENV = "RUNNER_SWEEP_PARENT_RUN_ID"


def current() -> Dict[str, Optional[str]]:
    """The sweep the running job belongs to (ids are empty outside a multirun)."""
    return {"sweep_id": os.environ.get(SWEEP_ID_ENV), "parent_run_id": os.environ.get(PARENT_RUN_ENV)}


def job_tags(overrides: List[str]) -> Dict[str, str]:
    ids = current()
    tags = {"runner.overrides": " ".join(overrides)}
    if ids["sweep_id"]:
        tags.update({"runner.role": "job", "runner.sweep_id": ids["sweep_id"]})
    return tags


class SweepTracking(Callback):
    def __init__(self) -> None:
        self.results: List[str] = []
        # The parent run while it is open: (tracking settings, outputs root, run id, sweep id).
        self._open: Optional[tuple] = None
        self._exit_hook = False
        self._closing = False  # on_multirun_end began: every job ran

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_id = f"{sweep_dir.name}-{uuid.uuid4().hex[:6]}"
        os.environ[SWEEP_ID_ENV] = sweep_id
        os.environ.pop(PARENT_RUN_ENV, None)
        self.results = []
        self._closing = False
        last_sweep.update(jobs=0, failed=0)
        # The jobs run one after another in this process: one engine serves all that can share it.
        warm_engine.keep_between_jobs(True)
        if not config.tracking.enabled:
            return
        swept = config.hydra.sweeper.get("params")
        params = dict(OmegaConf.to_container(swept)) if swept else {}
        params["overrides"] = " ".join(config.hydra.overrides.task)
        try:
            parent = tracking.start_sweep_run(OmegaConf.to_object(config.tracking), Path(config.paths.outputs), sweep_id, sweep_dir, params)
        except Exception as error:  # noqa: BLE001 - jobs still run and write results; they log unnested
            log.error("tracking: could not open the sweep's parent run (%s); jobs are logged without it", error)
            return
        os.environ[PARENT_RUN_ENV] = parent
        self._open = (OmegaConf.to_object(config.tracking), Path(config.paths.outputs), parent, sweep_id)
        if not self._exit_hook:
            atexit.register(self._close_if_left_open)
            self._exit_hook = True
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "sweep.json").write_text(json.dumps({"sweep_id": sweep_id, "parent_run_id": parent}))
        log.info("sweep %s: MLflow parent run %s", sweep_id, parent)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if os.environ.get(SWEEP_ID_ENV):
            ok = job_return.status == JobStatus.COMPLETED and job_return.return_value == "finished"
            self.results.append("finished" if ok else "failed")
            last_sweep.update(jobs=len(self.results), failed=self._failed())
        faults.reached("job_ended")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._closing = True
        faults.reached("sweep_closing")
        try:
            warm_engine.end_of_sweep()
        except Exception as error:  # noqa: BLE001 - every job's rows are written; the exit hook tries again
            log.error("stopping the sweep's engine failed (%s)", error)
        self._open = None
        failed = self._failed()
        last_sweep.update(jobs=len(self.results), failed=failed)
        parent = os.environ.pop(PARENT_RUN_ENV, None)
        sweep_id = os.environ.pop(SWEEP_ID_ENV, None)
        if not parent:
            return
        tracking_cfg = OmegaConf.to_object(config.tracking)
        outputs_root = Path(config.paths.outputs)
        try:
            tracking.end_sweep_run(tracking_cfg, outputs_root, parent, len(self.results), failed)
        except Exception as error:  # noqa: BLE001 - every job is done and logged; a raise here is only a traceback
            _report_unclosed(tracking_cfg, outputs_root, parent, sweep_id, tracking.sweep_status(len(self.results), failed), error)
            return
        if len(self.results) > failed:
            self._compare(tracking_cfg, outputs_root, sweep_id, parent)

    def _failed(self) -> int:
        return sum(1 for r in self.results if r != "finished")

    def _close_if_left_open(self) -> None:
        """Hydra raises past on_multirun_end when it cannot compose a job's config (a choice
        in the sweep that does not exist): at exit, a parent still open is closed as FAILED
        rather than left RUNNING for ever."""
        if self._open is None:
            return
        tracking_cfg, outputs_root, parent, sweep_id = self._open
        self._open = None
        jobs = len(self.results)
        if self._closing:
            log.error("sweep %s was interrupted while it closed, after its %d job(s); its MLflow parent run %s is closed as FAILED", sweep_id, jobs, parent)
        else:
            log.error("sweep %s stopped before its jobs were done (%d of them ran); its MLflow parent run %s is closed as FAILED", sweep_id, jobs, parent)
        try:
            tracking.end_sweep_run(tracking_cfg, outputs_root, parent, jobs, self._failed(), status="FAILED")
        except Exception as error:  # noqa: BLE001 - at exit, saying how to close it is all that is left
            _report_unclosed(tracking_cfg, outputs_root, parent, sweep_id, "FAILED", error)

    @staticmethod
    def _compare(tracking_cfg: TrackingConfig, outputs_root: Path, sweep_id: str, parent: str) -> None:
        from runner import compare

        try:
            result = compare.compare(
                tracking.resolve_uri(tracking_cfg, outputs_root), tracking_cfg.experiment, sweep_id=sweep_id,
                parent_run_id=parent, metric=tracking_cfg.compare_metric, out_png=outputs_root / "compare" / f"{sweep_id}.png",
            )
        except Exception as error:  # noqa: BLE001 - the sweep's runs are logged; comparing can be redone
            log.error("comparison failed (%s); redo it with: python -m runner.compare --sweep %s", error, sweep_id)
            return
        print(result.text, flush=True)


def _report_unclosed(tracking_cfg: TrackingConfig, outputs_root: Path, parent: str, sweep_id: str, status: str, error: Exception) -> None:
    uri = tracking.resolve_uri(tracking_cfg, outputs_root)
    close = (
        f"python -c \"import mlflow; mlflow.set_tracking_uri('{uri}'); "
        f"mlflow.MlflowClient().set_terminated('{parent}', '{status}')\""
    )
    log.error(
        "tracking: the sweep's parent run %s could not be closed or given its job counts (%s: %s). Every job's results "
        "and runs are kept. Once the store at %s is back, close the parent if the UI still shows it RUNNING with: %s ; "
        "and redo the comparison with: python -m runner.compare --uri %s --experiment %s --sweep %s",
        parent, type(error).__name__, (str(error).splitlines() or [""])[0], uri, close, uri, tracking_cfg.experiment, sweep_id,
    )
