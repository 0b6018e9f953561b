"""MLflow logging of a finished run folder. The only module that touches MLflow.

A run folder holds everything worth logging (config.yaml, metrics.json, results/), so
logging reads the folder: the same call logs a run just finished and re-logs one whose
tracking store was unreachable (`python -m runner.track <run folder>`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

from runner import redaction

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
SAMPLE_TEXT_CHARS = 400


def default_uri(outputs_root: Path) -> str:
    return f"sqlite:///{(outputs_root / DEFAULT_DB).resolve()}"


def resolve_uri(tracking: Mapping[str, Any], outputs_root: Path) -> str:
    return tracking.get("uri") or default_uri(outputs_root)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _params(config: Mapping[str, Any]) -> Dict[str, str]:
    params = {}
    for key, value in flatten(redaction.redact(dict(config))).items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        params[key] = text[:MAX_PARAM_CHARS]
    return params


def experiment_id(mlflow, name: str, outputs_root: Path) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        # Beside the database, not in whatever folder the command ran from.
        location = (outputs_root / DEFAULT_ARTIFACTS).resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def sample_table(results_dir: Path, fmt: str, text_columns: Iterable[str], rows: int):
    import pyarrow.dataset as pds

    files = sorted(str(p) for p in results_dir.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    if not files or rows <= 0:
        return None
    dataset = pds.dataset(files, format=pds.JsonFileFormat() if fmt == "jsonl" else "parquet")
    wanted = [c for c in ["id", *text_columns, "generated_text", "num_input_tokens", "num_generated_tokens"] if c in dataset.schema.names]
    frame = dataset.head(rows, columns=list(dict.fromkeys(wanted))).to_pandas()
    for column in text_columns:
        if column in frame:
            frame[column] = frame[column].astype(str).str.slice(0, SAMPLE_TEXT_CHARS)
    return frame


def log_run_folder(
    run_dir: Path,
    outputs_root: Path,
    parent_run_id: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
) -> str:
    """Log a run folder to MLflow; returns the MLflow run id."""
    import mlflow
    import yaml

    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    summary = json.loads((run_dir / "metrics.json").read_text())
    tracking = config["tracking"]
    mlflow.set_tracking_uri(resolve_uri(tracking, outputs_root))
    exp_id = experiment_id(mlflow, tracking["experiment"], outputs_root)
    results_dir = run_dir / "results"
    fmt = config["output"]["format"]
    all_tags = {
        "runner.run_dir": str(run_dir.resolve()),
        "runner.model": config["model"]["name"],
        "runner.hw": config["hw"]["name"],
        "runner.dataset": config["dataset"]["name"],
        "runner.status": summary.get("status", "finished"),
        **(tags or {}),
    }
    run_name = tracking.get("run_name") or f"{config['model']['name']}-{config['hw']['name']}-{run_dir.name}"
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, parent_run_id=parent_run_id, tags=all_tags) as run:
        mlflow.log_params(_params(config))
        mlflow.log_metrics({k: float(v) for k, v in summary["metrics"].items()})
        mlflow.log_artifact(str(run_dir / "config.yaml"))
        mlflow.log_artifact(str(run_dir / "metrics.json"))
        if tracking.get("log_results", True) and results_dir.is_dir():
            mlflow.log_artifacts(str(results_dir), artifact_path="results")
        text_columns = list(summary.get("prompt_columns", []))
        table = sample_table(results_dir, fmt, text_columns, int(tracking.get("sample_rows", 8)))
        if table is not None:
            mlflow.log_table(data=table, artifact_file="samples.json")
        return run.info.run_id
