"""One run, start to finish: check -> resolve model -> pipeline -> metrics -> tracking.

A plain function of the composed config and the run folder, so tests call it without Hydra.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import yaml
from omegaconf import DictConfig, OmegaConf

from runner import accounting, data, metrics, models, pipeline, preflight, prompt, redaction, result_files, schema, sysmon, tracking

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    run_dir: Path
    results_dir: Optional[Path] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    mlflow_run_id: Optional[str] = None
    tracking_error: Optional[str] = None


def save_config(config: Dict[str, Any], run_dir: Path) -> Path:
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(redaction.redact(config), sort_keys=False))
    return path


def run(
    cfg: DictConfig,
    run_dir: Path,
    outputs_root: Path = Path("outputs"),
    parent_run_id: Optional[str] = None,
    tags: Optional[Dict[str, str]] = None,
    resume: bool = False,
) -> RunOutcome:
    """Run one job into run_dir; with resume=True, finish a killed run in the same folder."""
    redaction.install_log_redaction()
    schema.validate(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    columns = preflight.run_checks(config)
    if not resume and result_files.list_files(run_dir / "results"):
        raise preflight.PreflightError([f"{run_dir} already holds results. Fix: resume it with python -m runner.resume {run_dir}"])
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir)
    outcome = RunOutcome(run_dir=run_dir)
    tracking_problem = tracking.probe(config["tracking"], outputs_root) if config["tracking"]["enabled"] else None
    if tracking_problem:
        log.warning("%s: the run goes on and writes its results; logging will be skipped", tracking_problem)
    location = _locate_and_check_lengths(config)
    if config["dry_run"]:
        log.info("dry run: config, model and data checked; config saved to %s", run_dir / "config.yaml")
        return outcome
    _execute(config, location, run_dir, columns, resume, outcome)
    if config["tracking"]["enabled"]:
        _track(config, run_dir, outputs_root, parent_run_id, tags, tracking_problem, outcome)
    return outcome


def _locate_and_check_lengths(config: Dict[str, Any]) -> models.ModelLocation:
    location = models.locate(config["model"])
    log.info("model %s loads from %s %s", config["model"]["name"], location.source, location.note)
    too_long = preflight.check_prompt_lengths(config, location.source)
    if too_long and config["errors"]["on_row_error"] == "fail":
        raise preflight.PreflightError([too_long])
    if too_long:
        log.warning("%s", too_long)
    return location


def _execute(config: Dict[str, Any], location: models.ModelLocation, run_dir: Path, columns, resume: bool, outcome: RunOutcome) -> None:
    """Pipeline, then row accounting and figures, into the run folder."""
    fmt = config["output"]["format"]
    if resume:
        dropped = accounting.drop_unreadable(run_dir / "results", fmt)
        log.info("resuming %s (%d half-written file(s) removed)", run_dir, len(dropped))
    rows_in = data.count_rows(config["dataset"], redaction.hub_token())
    with sysmon.SystemMonitor() as monitor:
        done = pipeline.run(config, location, run_dir, redaction.hub_token(), columns)
    monitor.write_csv(run_dir / tracking.SYSTEM_CSV)
    counts = accounting.settle(run_dir, fmt, config["dataset"]["id_column"], rows_in)
    outcome.results_dir = done.results_dir
    outcome.metrics = metrics.compute(
        done.results_dir, fmt, done.started_at, done.finished_at, config["hw"], int(config["processor"]["concurrency"]),
    )
    outcome.metrics.update(monitor.summary())
    outcome.metrics.update(counts.as_dict())
    if not counts.balanced:
        log.error("row accounting does not balance: %s. Resume with python -m runner.resume %s", counts.as_dict(), run_dir)
    elif counts.rows_failed:
        log.warning("%d row(s) failed; they are in %s with their reasons", counts.rows_failed, run_dir / accounting.FAILED_DIR)
    summary = {
        "status": "finished" if counts.balanced else "incomplete",
        "metrics": outcome.metrics,
        "prompt_columns": list(prompt.column_map(config["prompt"]).values()),
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    log.info("results: %s", done.results_dir)
    log.info("metrics: %s", json.dumps({k: round(v, 3) for k, v in outcome.metrics.items()}))


def _track(config, run_dir: Path, outputs_root: Path, parent_run_id, tags, tracking_problem, outcome: RunOutcome) -> None:
    relog = f"python -m runner.track {run_dir}"
    if tracking_problem:
        outcome.tracking_error = tracking_problem
    else:
        try:
            outcome.mlflow_run_id = tracking.log_run_folder(run_dir, outputs_root, parent_run_id, tags)
            log.info("MLflow run %s at %s", outcome.mlflow_run_id, tracking.resolve_uri(config["tracking"], outputs_root))
            return
        except Exception as error:  # noqa: BLE001 - results are safe on disk whatever the store says
            outcome.tracking_error = f"{type(error).__name__}: {error}"
    log.error("tracking failed (%s); the results are in %s. Re-log them with: %s", outcome.tracking_error, run_dir, relog)
