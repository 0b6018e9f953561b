"""MLflow logging of a finished run folder. The only module that touches MLflow.

A run folder holds everything worth logging (config.yaml, metrics.json, results/), so
logging reads the folder: the same call logs a run just finished and re-logs one whose
tracking store was unreachable (`python -m runner.track <run folder>`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
import dataclasses
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from runner import redaction, result_files
from runner.errors import RunnerError
from runner.schema import RunConfig, TrackingConfig

log = logging.getLogger(__name__)


class TrackingError(RunnerError):
    """A run that cannot be logged as asked (exit 2); a store that is down is not one of these."""


MAX_PARAM_CHARS = 6000
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
SAMPLE_TEXT_CHARS = 400
SYSTEM_CSV = "system_metrics.csv"
# Without a kind, MLflow 3's UI opens an experiment on the GenAI overview (traces, none here)
# and files its runs under "Evaluation runs"; this kind (MLflow's "Machine learning") opens it
# on the runs table. MLflow 3.17's UI goes by its own per-browser switch first (GenAI unless
# set, remembered in localStorage), so links to the UI also carry that switch (UI_MODE).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
UI_MODE = "workflowType=machine_learning"
# Where `mlflow ui` serves by default (README's command).
DEFAULT_UI = "http://127.0.0.1:5000"


def default_uri(outputs_root: Path) -> str:
    return f"sqlite:///{(outputs_root / DEFAULT_DB).resolve()}"


def resolve_uri(tracking: TrackingConfig, outputs_root: Path) -> str:
    return tracking.uri or default_uri(outputs_root)


def ui_link(uri: str, experiment_id: str, run_id: Optional[str] = None) -> str:
    """Where a person sees the run (or the experiment) in MLflow's UI, on the runs table: a
    tracking server serves its UI at its own address; a local store is opened with `mlflow ui`."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI
    page = f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{page}?{UI_MODE}"


def run_link(run_id: str, uri: str) -> str:
    import mlflow

    try:
        experiment = mlflow.MlflowClient(uri).get_run(run_id).info.experiment_id
    except Exception:  # noqa: BLE001 - the run is logged; the link is only a convenience
        return f"{DEFAULT_UI if not uri.startswith(('http://', 'https://')) else uri.rstrip('/')}/#/experiments?{UI_MODE}"
    return ui_link(uri, experiment, run_id)


def probe(tracking: TrackingConfig, outputs_root: Path) -> Optional[str]:
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
    """A config as plain data (runner.config.to_dict, or a saved config.yaml), flattened and redacted."""
    params = {}
    for key, value in flatten(redaction.redact(dict(config))).items():
        text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        params[key] = text[:MAX_PARAM_CHARS]
    return params


def open_store(tracking: TrackingConfig, outputs_root: Path, uri: Optional[str] = None) -> str:
    """Point MLflow at the run's store (or `uri`) and return the experiment id, creating it."""
    import mlflow

    mlflow.set_tracking_uri(uri or resolve_uri(tracking, outputs_root))
    return experiment_id(mlflow, tracking.experiment, outputs_root)


def saved_tracking(config: Mapping[str, Any]) -> TrackingConfig:
    """The tracking section of a saved run config (plain data), settings it lacks at their
    defaults and settings this runner no longer knows left out."""
    saved = config.get("tracking") or {}
    return TrackingConfig(**{f.name: saved[f.name] for f in dataclasses.fields(TrackingConfig) if f.name in saved})


def experiment_id(mlflow, name: str, outputs_root: Path) -> str:
    """The experiment's id, creating it; an experiment without a kind is given the runs-table
    kind, one whose kind a person chose in the UI keeps it."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        # Beside the database, not in whatever folder the command ran from.
        location = (outputs_root / DEFAULT_ARTIFACTS).resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


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


def system_series(csv_file, started_at: Optional[float]):
    """The sampled system metrics as MLflow Metrics: epoch-millisecond timestamps, steps in
    time order. A CSV written before samples carried their epoch time (`time_s` only, seconds
    since the monitor started) is placed from `started_at`, the start of the pipeline attempt
    that wrote it (each attempt rewrites the CSV)."""
    if not csv_file.exists():
        return []
    import csv
    import io

    from mlflow.entities import Metric

    samples = []
    with io.StringIO(csv_file.read_text(), newline="") as handle:
        for sample in csv.DictReader(handle):
            elapsed = sample.pop("time_s", None)
            epoch = sample.pop("timestamp", None)
            if epoch not in ("", None):
                when = float(epoch)
            elif elapsed not in ("", None) and started_at is not None:
                when = started_at + float(elapsed)
            else:
                continue  # a sample with no time cannot be placed on the run's clock
            samples.append((when, sample))
    samples.sort(key=lambda pair: pair[0])
    metrics = []
    for step, (when, sample) in enumerate(samples):
        for key, value in sample.items():
            if value not in ("", None):
                metrics.append(Metric(key, float(value), int(when * 1000), step))
    return metrics


def job_times(run) -> Dict[str, Optional[float]]:
    """When the job began and ended, in epoch seconds, from its manifest: runs are logged after
    the fact, and MLflow would otherwise show the seconds logging took as the run's duration.
    begin: the run state opened; end: the last save (the seal) or the last attempt's end;
    last_attempt: the last pipeline start."""
    from runner import run_state

    try:
        manifest = run_state.load(run)
    except (OSError, ValueError) as error:
        log.warning("%s: its manifest cannot be read (%s); the MLflow run gets the time of logging", run, error)
        manifest = None
    if manifest is None:
        return {"begin": None, "end": None, "last_attempt": None}
    started = [a["started_at"] for a in manifest.attempts if a.get("started_at")]
    finished = [a["finished_at"] for a in manifest.attempts if a.get("finished_at")]
    begin = min([manifest.created_at, *started])
    end = max([manifest.updated_at, *finished])
    return {"begin": begin, "end": end, "last_attempt": started[-1] if started else begin}


def start_sweep_run(tracking: TrackingConfig, outputs_root: Path, sweep_id: str, sweep_dir: Path, sweep_params: Mapping[str, str]) -> str:
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


def sweep_status(jobs: int, failed: int) -> str:
    return "FAILED" if jobs and failed == jobs else "FINISHED"


def end_sweep_run(tracking: TrackingConfig, outputs_root: Path, run_id: str, jobs: int, failed: int, status: Optional[str] = None) -> None:
    """Log the job counts on the sweep's parent run and close it (as `status`, else by the
    counts); the run is closed even when the counts cannot be logged, so it never stays
    RUNNING for want of them."""
    import mlflow
    from mlflow.entities import Metric

    mlflow.set_tracking_uri(resolve_uri(tracking, outputs_root))
    client = mlflow.MlflowClient()
    now = _now_ms()
    try:
        client.log_batch(run_id, metrics=[Metric("jobs", jobs, now, 0), Metric("jobs_failed", failed, now, 0)])
    finally:
        client.set_terminated(run_id, status or sweep_status(jobs, failed))


def log_failed_run(
    config: RunConfig,
    outputs_root: Path,
    error: str,
    parent_run_id: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    started_at: Optional[float] = None,
) -> str:
    """Record a job that did not finish: its config, the error, status FAILED, from when the
    job started (epoch seconds; default now) to now."""
    import mlflow

    from runner.config import to_dict

    exp_id = open_store(config.tracking, outputs_root)
    client = mlflow.MlflowClient()
    all_tags = {"runner.status": "failed", "runner.error": redaction.mask_text(error)[:5000], **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    start_ms = int(started_at * 1000) if started_at is not None else None
    run = client.create_run(exp_id, start_time=start_ms, run_name=f"{config.model.name}-{config.hw.name}-failed", tags=all_tags)
    params = _params(to_dict(config))
    items = list(params.items())
    for start in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in items[start : start + 100]])
    client.set_terminated(run.info.run_id, "FAILED")
    return run.info.run_id


def log_run_folder(
    run,
    outputs_root: Optional[Path],
    parent_run_id: Optional[str] = None,
    tags: Optional[Mapping[str, str]] = None,
    uri: Optional[str] = None,
) -> str:
    """Log a run (a storage Location or a local path) to MLflow (to `uri` if given, else the
    run's own store, under outputs_root or the run's paths.outputs); returns the MLflow run id.

    A run on local disk has its results copied into MLflow's artifacts; a run in object
    storage is already where every node and person can read it, so MLflow gets its small
    files, a sample table and the run's URI (tag runner.run_uri), not a second copy of the data.
    """
    import tempfile

    import mlflow
    import yaml
    from mlflow.tracking.context import registry as context_registry

    from runner import run_state, storage

    if not isinstance(run, storage.Location):
        run = storage.resolve(str(run))
    missing = [name for name in (run_state.CONFIG, run_state.METRICS) if not run.child(name).exists()]
    if missing:
        raise TrackingError(
            f"{run} has no {' or '.join(missing)}: not a finished run's location. Fix: the location the run printed; "
            f"a run that stopped early is finished first with python -m runner.resume {run}"
        )
    config = yaml.safe_load(run.child(run_state.CONFIG).read_text())
    summary = json.loads(run.child(run_state.METRICS).read_text())
    tracking = saved_tracking(config)
    exp_id = open_store(tracking, Path(outputs_root or saved_outputs_root(config)), uri)
    results, failed = run.child(run_state.RESULTS), run.child(run_state.FAILED)
    all_tags = {
        "runner.run_dir": run.uri,
        "runner.run_uri": run.uri,
        "runner.model": config["model"]["name"],
        "runner.hw": config["hw"]["name"],
        "runner.dataset": config["dataset"]["name"],
        "runner.status": summary.get("status", "finished"),
        **engine_tags(summary.get("engine")),
        **(tags or {}),
    }
    run_name = tracking.run_name or f"{config['model']['name']}-{config['hw']['name']}-{run.name}"
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    times = job_times(run)
    begin_ms, end_ms = (int(times[k] * 1000) if times[k] is not None else None for k in ("begin", "end"))
    client = mlflow.MlflowClient()
    # The client's create_run, unlike mlflow.start_run, takes a start time; the source and
    # user tags start_run would add are resolved the same way.
    created = client.create_run(exp_id, start_time=begin_ms, tags=context_registry.resolve_tags(all_tags), run_name=run_name)
    run_id = created.info.run_id
    with _failed_on_error(client, run_id):
        _log_batches(client, run_id, params=_params(config), metrics={k: float(v) for k, v in summary["metrics"].items()}, stamp_ms=end_ms)
        series = system_series(run.child(SYSTEM_CSV), times["last_attempt"])
        for start in range(0, len(series), 1000):
            client.log_batch(run_id, metrics=series[start : start + 1000])
        with tempfile.TemporaryDirectory(prefix="runner-track-") as staging:
            for name in (run_state.CONFIG, run_state.METRICS):
                local = Path(staging) / name
                local.write_bytes(run.child(name).read_bytes())
                client.log_artifact(run_id, str(local))
        if run.is_local:
            if tracking.log_results and results.list_files():
                client.log_artifacts(run_id, results.path, artifact_path="results")
            if failed.list_files():
                client.log_artifacts(run_id, failed.path, artifact_path="failed")
        text_columns = list(summary.get("prompt_columns", []))
        table = sample_table(results, text_columns, tracking.sample_rows)
        if table is not None:
            client.log_table(run_id, data=table, artifact_file="samples.json")
    client.set_terminated(run_id, "FINISHED", end_time=end_ms)
    return run_id


def saved_outputs_root(config: Mapping[str, Any]) -> str:
    """paths.outputs of a saved run config; the default for a run saved before that setting."""
    from runner.schema import PathsConfig

    return (config.get("paths") or {}).get("outputs") or PathsConfig.outputs


def log_record(
    config: RunConfig,
    outputs_root: Path,
    run_name: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    extra_params: Optional[Mapping[str, str]] = None,
    files: Iterable[Tuple[Path, Optional[str]]] = (),
    started_at: Optional[float] = None,
) -> str:
    """One MLflow run of figures measured elsewhere (runner.bench), in the config's store: the
    config as params, redacted as every logged config is, the figures, and files (path, folder
    in the artifacts), spanning started_at (epoch seconds) to now. Returns its run id."""
    import mlflow
    from mlflow.tracking.context import registry as context_registry

    from runner.config import to_dict

    exp_id = open_store(config.tracking, outputs_root)
    client = mlflow.MlflowClient()
    start_ms = int(started_at * 1000) if started_at is not None else None
    run_id = client.create_run(exp_id, start_time=start_ms, tags=context_registry.resolve_tags(dict(tags)), run_name=run_name).info.run_id
    with _failed_on_error(client, run_id):
        _log_batches(client, run_id, params={**_params(to_dict(config)), **(extra_params or {})}, metrics=metrics, stamp_ms=None)
        for path, folder in files:
            client.log_artifact(run_id, str(path), artifact_path=folder)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def attach_files(uri: str, run_id: str, files: Mapping[str, bytes]) -> None:
    """Add files (name -> content) to an existing run's artifacts, e.g. runner.compare's table
    and plot on a sweep's parent run."""
    import tempfile

    import mlflow

    client = mlflow.MlflowClient(uri)
    with tempfile.TemporaryDirectory(prefix="runner-attach-") as staging:
        for name, content in files.items():
            path = Path(staging) / name
            path.write_bytes(content)
            client.log_artifact(run_id, str(path))


@contextlib.contextmanager
def _failed_on_error(client, run_id: str):
    """A run whose logging fails is marked FAILED, never left RUNNING."""
    try:
        yield
    except BaseException:
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception as error:  # noqa: BLE001 - the first failure is the one to report
            log.error("MLflow run %s could not be marked FAILED (%s)", run_id, error)
        raise


def engine_tags(engine: Optional[Mapping[str, Any]]) -> Dict[str, str]:
    """Which engine ran the job: jobs of a sweep with the same runner.engine shared one, and
    only the one with runner.engine_started=true paid its start-up (in its startup_s)."""
    if not engine:
        return {}
    return {
        "runner.engine": str(engine["id"]),
        "runner.engine_started": "true" if engine.get("started") else "false",
        "runner.engine_mode": str(engine.get("mode", "per_job")),
    }


def _log_batches(client, run_id: str, params: Mapping[str, str], metrics: Mapping[str, float], stamp_ms: Optional[int]) -> None:
    """Params and summary metrics in MLflow's batch limits (100 params, 1000 metrics a call)."""
    from mlflow.entities import Metric, Param

    stamp = stamp_ms if stamp_ms is not None else _now_ms()
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])
    figures = [Metric(k, v, stamp, 0) for k, v in metrics.items()]
    for start in range(0, len(figures), 1000):
        client.log_batch(run_id, metrics=figures[start : start + 1000])


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
