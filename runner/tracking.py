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

from runner import redaction, result_files

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
SAMPLE_TEXT_CHARS = 400
SYSTEM_CSV = "system_metrics.csv"


def default_uri(outputs_root: Path) -> str:
    return f"sqlite:///{(outputs_root / DEFAULT_DB).resolve()}"


def resolve_uri(tracking: Mapping[str, Any], outputs_root: Path) -> str:
    return tracking.get("uri") or default_uri(outputs_root)


def probe(tracking: Mapping[str, Any], outputs_root: Path) -> Optional[str]:
    """Why the tracking store cannot be reached, or None. Cheap: no MLflow call, no retries."""
    import socket
    from urllib.parse import urlparse

    uri = resolve_uri(tracking, outputs_root)
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=3).close()
        except OSError as error:
            return f"tracking.uri={uri} cannot be reached ({error})"
    elif parsed.scheme == "sqlite":
        return _probe_sqlite(uri)
    return None


def _probe_sqlite(uri: str) -> Optional[str]:
    """Create (or open for writing) the database file and its folder, then remove what was
    created. os.access is no test: it says root may write /proc, and MLflow then retries for
    ~100 s before it gives up."""
    import os

    path = uri[len("sqlite:///"):].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    database = Path(path)
    created = [p for p in (database.parent, *database.parent.parents) if not p.exists()]  # deepest first
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        if database.exists():
            os.close(os.open(database, os.O_RDWR))
        else:
            os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL))
            created.insert(0, database)
    except OSError as error:
        return (
            f"tracking.uri={uri}: cannot write the store's database {database} ({error.strerror or error}). "
            "Fix: tracking.uri=sqlite:///<a writable path>.db, or leave tracking.uri unset for outputs/mlflow.db, or tracking=off"
        )
    finally:
        for made in created:  # MLflow makes the folder and the file itself when it opens the store
            try:
                if made == database:
                    made.unlink()
                else:
                    made.rmdir()
            except OSError:
                pass
    return None


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


def open_store(tracking: Mapping[str, Any], outputs_root: Path, uri: Optional[str] = None) -> str:
    """Point MLflow at the run's store (or `uri`) and return the experiment id, creating it."""
    import mlflow

    mlflow.set_tracking_uri(uri or resolve_uri(tracking, outputs_root))
    return experiment_id(mlflow, tracking["experiment"], outputs_root)


def experiment_id(mlflow, name: str, outputs_root: Path) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        # Beside the database, not in whatever folder the command ran from.
        location = (outputs_root / DEFAULT_ARTIFACTS).resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def sample_table(results, text_columns: Iterable[str], rows: int):
    """The first rows of a results Location, text cut short, as a DataFrame for log_table."""
    if rows <= 0 or not results.list_files():
        return None
    dataset = result_files.open_dataset(results)
    wanted = [c for c in ["id", *text_columns, "generated_text", "num_input_tokens", "num_generated_tokens"] if c in dataset.schema.names]
    frame = dataset.head(rows, columns=list(dict.fromkeys(wanted))).to_pandas()
    for column in text_columns:
        if column in frame:
            frame[column] = frame[column].astype(str).str.slice(0, SAMPLE_TEXT_CHARS)
    return frame


def _log_system_series(mlflow, csv_file) -> None:
    if not csv_file.exists():
        return
    import csv
    import io

    from mlflow.entities import Metric

    metrics = []
    with io.StringIO(csv_file.read_text(), newline="") as handle:
        for step, sample in enumerate(csv.DictReader(handle)):
            stamp = int(1000 * float(sample.pop("time_s")))
            for key, value in sample.items():
                if value not in ("", None):
                    metrics.append(Metric(key, float(value), stamp, step))
    if metrics:
        run_id = mlflow.active_run().info.run_id
        client = mlflow.MlflowClient()
        for start in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[start : start + 1000])


def start_sweep_run(tracking: Mapping[str, Any], outputs_root: Path, sweep_id: str, sweep_dir: Path, sweep_params: Mapping[str, str]) -> str:
    """The parent run of a multirun; its jobs are nested under it. Returns its run id."""
    import mlflow

    exp_id = open_store(tracking, outputs_root)
    client = mlflow.MlflowClient()
    run = client.create_run(
        exp_id,
        run_name=f"sweep-{sweep_id}",
        tags={"runner.role": "sweep", "runner.sweep_id": sweep_id, "runner.sweep_dir": str(Path(sweep_dir).resolve())},
    )
    for key, value in sweep_params.items():
        client.log_param(run.info.run_id, f"sweep.{key}", str(value)[:MAX_PARAM_CHARS])
    return run.info.run_id


def end_sweep_run(tracking: Mapping[str, Any], outputs_root: Path, run_id: str, jobs: int, failed: int) -> None:
    import mlflow

    mlflow.set_tracking_uri(resolve_uri(tracking, outputs_root))
    client = mlflow.MlflowClient()
    client.log_metric(run_id, "jobs", jobs)
    client.log_metric(run_id, "jobs_failed", failed)
    client.set_terminated(run_id, "FAILED" if jobs and failed == jobs else "FINISHED")


def log_failed_run(
    config: Mapping[str, Any],
    outputs_root: Path,
    error: str,
    parent_run_id: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
) -> str:
    """Record a job that did not finish: its config, the error, status FAILED."""
    import mlflow

    exp_id = open_store(config["tracking"], outputs_root)
    client = mlflow.MlflowClient()
    all_tags = {"runner.status": "failed", "runner.error": redaction.mask_text(error)[:5000], **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=f"{config['model']['name']}-{config['hw']['name']}-failed", tags=all_tags)
    params = _params(config)
    items = list(params.items())
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in items[start : start + 100]])
    client.set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


def log_run_folder(
    run,
    outputs_root: Path,
    parent_run_id: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    uri: Optional[str] = None,
) -> str:
    """Log a run (a storage Location or a local path) to MLflow (to `uri` if given, else the
    run's own store); returns the MLflow run id.

    A run on local disk has its results copied into MLflow's artifacts; a run in object
    storage is already where every node and person can read it, so MLflow gets its small
    files, a sample table and the run's URI (tag runner.run_uri), not a second copy of the data.
    """
    import tempfile

    import mlflow
    import yaml

    from runner import run_state, storage

    if not isinstance(run, storage.Location):
        run = storage.resolve(str(run))
    config = yaml.safe_load(run.child(run_state.CONFIG).read_text())
    summary = json.loads(run.child(run_state.METRICS).read_text())
    tracking = config["tracking"]
    exp_id = open_store(tracking, outputs_root, uri)
    results, failed = run.child(run_state.RESULTS), run.child(run_state.FAILED)
    all_tags = {
        "runner.run_dir": run.uri,
        "runner.run_uri": run.uri,
        "runner.model": config["model"]["name"],
        "runner.hw": config["hw"]["name"],
        "runner.dataset": config["dataset"]["name"],
        "runner.status": summary.get("status", "finished"),
        **(tags or {}),
    }
    run_name = tracking.get("run_name") or f"{config['model']['name']}-{config['hw']['name']}-{run.name}"
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, parent_run_id=parent_run_id, tags=all_tags) as active, \
            tempfile.TemporaryDirectory(prefix="runner-track-") as staging:
        mlflow.log_params(_params(config))
        mlflow.log_metrics({k: float(v) for k, v in summary["metrics"].items()})
        _log_system_series(mlflow, run.child(SYSTEM_CSV))
        for name in (run_state.CONFIG, run_state.METRICS):
            local = Path(staging) / name
            local.write_bytes(run.child(name).read_bytes())
            mlflow.log_artifact(str(local))
        if run.is_local:
            if tracking.get("log_results", True) and results.list_files():
                mlflow.log_artifacts(results.path, artifact_path="results")
            if failed.list_files():
                mlflow.log_artifacts(failed.path, artifact_path="failed")
        text_columns = list(summary.get("prompt_columns", []))
        table = sample_table(results, text_columns, int(tracking.get("sample_rows", 8)))
        if table is not None:
            mlflow.log_table(data=table, artifact_file="samples.json")
        return active.info.run_id
