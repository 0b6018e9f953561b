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

from runner import metrics, models, pipeline, preflight, prompt, redaction, schema, tracking

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


def run(cfg: DictConfig, run_dir: Path, outputs_root: Path = Path("outputs")) -> RunOutcome:
    redaction.install_log_redaction()
    schema.validate(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    preflight.run_checks(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir)
    outcome = RunOutcome(run_dir=run_dir)
    if config["dry_run"]:
        log.info("dry run: config, model and data checked; config saved to %s", run_dir / "config.yaml")
        return outcome

    location = models.locate(config["model"])
    log.info("model %s loads from %s %s", config["model"]["name"], location.source, location.note)
    done = pipeline.run(config, location, run_dir, redaction.hub_token())
    outcome.results_dir = done.results_dir
    outcome.metrics = metrics.compute(
        done.results_dir, config["output"]["format"], done.started_at, done.finished_at,
        config["hw"], int(config["processor"]["concurrency"]),
    )
    summary = {
        "status": "finished",
        "metrics": outcome.metrics,
        "prompt_columns": list(prompt.column_map(config["prompt"]).values()),
    }
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    log.info("results: %s", done.results_dir)
    log.info("metrics: %s", json.dumps({k: round(v, 3) for k, v in outcome.metrics.items()}))

    if config["tracking"]["enabled"]:
        try:
            outcome.mlflow_run_id = tracking.log_run_folder(run_dir, outputs_root)
            log.info("MLflow run %s at %s", outcome.mlflow_run_id, tracking.resolve_uri(config["tracking"], outputs_root))
        except Exception as error:  # noqa: BLE001 - results are safe on disk whatever the store says
            outcome.tracking_error = f"{type(error).__name__}: {error}"
            log.error(
                "tracking failed (%s); the results are in %s. Re-log them with: python -m runner.track %s",
                outcome.tracking_error, run_dir, run_dir,
            )
    return outcome
