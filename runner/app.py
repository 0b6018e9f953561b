"""One run, start to finish: check -> scan input -> open run state -> pipeline -> account -> seal -> track.

A plain function of the composed config, so tests call it without Hydra. Everything about
the run lives at its location (a local folder or a URI), written so that a kill at any
point is finished by `python -m runner.resume <location>` with each row once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from runner import (
    accounting, chatter, cluster, faults, metrics, models, outputs, pipeline, plan, preflight, prompt, readers, redaction, run_state, samples,
    storage, summary, sysmon,
    tracking,
)
from runner.config import to_dict
from runner.errors import RunIncomplete
from runner.schema import OnRowError, RunConfig
from runner.storage import Location

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    location: Location
    results_dir: Optional[Location] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    mlflow_run_id: Optional[str] = None
    tracking_error: Optional[str] = None
    already_finished: bool = False
    counts: Dict[str, int] = field(default_factory=dict)
    pipeline_run: Optional[pipeline.PipelineRun] = None  # this call's pipeline attempt, with its timing marks
    config: Optional[RunConfig] = None
    tracking_uri: Optional[str] = None

    def summary(self) -> str:
        said = "was already finished" if self.already_finished else "finished"
        return summary.render(self.config, self.location, self.metrics, outcome=f"{self.location} {said}",
                              mlflow_run_id=self.mlflow_run_id, tracking_uri=self.tracking_uri, tracking_error=self.tracking_error,
                              log_file=chatter.log_file())


def run_location(config: RunConfig, run_dir: Path, outputs_root: Path) -> Location:
    """Where the run's state lives: under output.uri when set (the Hydra folder's path below
    outputs/ appended, so sweeps and dated runs keep their layout), else the Hydra folder."""
    uri = config.output.uri
    if not uri:
        return storage.resolve(str(run_dir))
    try:
        relative = Path(run_dir).resolve().relative_to(Path(outputs_root).resolve()).as_posix()
    except ValueError:
        relative = Path(run_dir).name
    return storage.resolve(uri).child(*relative.split("/"))


def chatter_file(location: Location, outputs_root: Path, resume: bool = False) -> Path:
    """Where Ray's and vLLM's output goes when no log file is set up (runner.resume; `python -m
    runner` writes it to Hydra's job log): always local, as the run may live at a URI."""
    folder = Path(location.uri) if location.is_local else Path(outputs_root)
    return folder / ("resume.log" if resume else "run.log")


def resume_command(location: Location) -> str:
    return f"python -m runner.resume {location}"


def save_config(plain: Dict[str, Any], location: Location) -> None:
    """The config as plain data (config.to_dict), redacted, as config.yaml."""
    location.child(run_state.CONFIG).write_text(yaml.safe_dump(redaction.redact(plain), sort_keys=False))


def run(
    config: RunConfig,
    run_dir: Path,
    outputs_root: Optional[Path] = None,
    parent_run_id: Optional[str] = None,
    tags: Optional[Dict[str, str]] = None,
    resume: bool = False,
    force: bool = False,
    location: Optional[Location] = None,
) -> RunOutcome:
    """Run one job; with resume=True, finish the run at `location` (default: from run_dir).
    outputs_root defaults to the config's paths.outputs. `config` is the composed config as
    runner.schema's dataclasses (runner.config.to_object)."""
    redaction.install_log_redaction()
    problems = outputs.config_problems(config)
    if problems:
        raise preflight.PreflightError(problems)
    outputs_root = Path(outputs_root or config.paths.outputs)
    location = location or run_location(config, run_dir, outputs_root)
    chatter.begin(config.log.verbose, chatter_file(location, outputs_root, resume))
    reader = preflight.run_checks(config, location, resume)
    if not cluster.target(config.ray):
        return _run_checked(config, location, reader, outputs_root, parent_run_id, tags, resume, force)
    try:
        _join_and_check(config, location)
        return _run_checked(config, location, reader, outputs_root, parent_run_id, tags, resume, force)
    finally:
        cluster.disconnect()  # the run's own actors end; nothing else of the cluster is touched


def _join_and_check(config: RunConfig, location: Location) -> None:
    """Joining an existing cluster is cheap: it is asked what it has before any work."""
    address = cluster.target(config.ray)
    try:
        pipeline.start_ray(config, pipeline.worker_env(config))
    except ConnectionError as error:
        setting = f"ray.address={address}" if config.ray.address else f"RAY_ADDRESS={address} (in the environment)"
        raise preflight.PreflightError([
            f"{setting}: no Ray cluster answers there ({error}). Fix: the head's address (`ray status` on a node prints it; "
            "ray.address=auto on a node of the cluster), or ray.address=local for a Ray of this run's own"
        ]) from None
    problems = cluster.check(config, cluster.current(), location)
    if problems:
        raise preflight.PreflightError(problems)


def _run_checked(config: RunConfig, location: Location, reader, outputs_root: Path, parent_run_id, tags, resume: bool, force: bool) -> RunOutcome:
    scan, problems = _scan_input(config, reader)
    tracking_problem = tracking.probe(config.tracking, outputs_root) if config.tracking.enabled else None
    model, lengths = _locate_and_check_lengths(config, reader, problems)
    if config.dry_run:
        uri = tracking.resolve_uri(config.tracking, outputs_root) if config.tracking.enabled else None
        print(plan.describe(config, model, scan, lengths, location, uri), flush=True)
        return RunOutcome(location=location)
    manifest = _open_run_state(config, location, reader, scan, resume, force)
    outcome = RunOutcome(location=location, results_dir=location.child(run_state.RESULTS), config=config)
    if manifest.status == run_state.FINISHED:
        log.info("%s finished already (%s); nothing to do", location, manifest.counts)
        outcome.metrics = dict(manifest.counts or {})
        outcome.already_finished = True
        return outcome
    if tracking_problem:
        log.warning("%s: the run goes on and writes its results; logging will be skipped", tracking_problem)
    balanced = _execute(config, model, location, reader, scan, manifest, outcome, outputs_root)
    if config.tracking.enabled:
        _track(config, location, outputs_root, parent_run_id, tags, tracking_problem, outcome)
    if not balanced:
        raise RunIncomplete(
            f"row accounting does not balance: {json.dumps(outcome.counts)}. "
            f"Finish it with: {resume_command(location)}"
        )
    return outcome


def _scan_input(config: RunConfig, reader):
    """One streamed pass over the input before anything starts: rows, bad lines, duplicate
    ids. Returns the scan and the problems that stop the run (reported with the length check's)."""
    started = time.time()
    scan = reader.scan()
    level = logging.WARNING if scan.bad_rows or scan.ignored_files else logging.INFO
    for note in scan.notes():
        log.log(level, "input: %s", note)
    problems = []
    duplicates = scan.duplicate_problem()
    if duplicates:
        problems.append(duplicates)
    if scan.bad_rows and config.errors.on_row_error == OnRowError.fail:
        shown = "; ".join(row.message for row in scan.bad_rows[:5])
        problems.append(f"{len(scan.bad_rows)} input row(s) cannot run: {shown}. Fix the data, or set errors.on_row_error=continue to record them in failed/")
    log.info("input: %d row(s) in %d chunk(s), scanned in %.1f s", scan.rows, len(scan.chunks), time.time() - started)
    return scan, problems


def _open_run_state(config: RunConfig, location: Location, reader, scan, resume: bool, force: bool) -> run_state.Manifest:
    plain = to_dict(config)
    redacted = redaction.redact(plain)
    fingerprint = reader.fingerprint()
    id_column = readers.id_column(config.dataset)
    if not resume:
        manifest = run_state.Manifest(config=redacted, input=fingerprint, id_column=id_column)
        # The manifest first: a run folder without one is not a run, and a resume rebuilds a
        # missing config.yaml from it.
        run_state.save(location, manifest)
        save_config(plain, location)
        log.info("run state at %s (resume a killed run with: %s)", location, resume_command(location))
        faults.reached("manifest_written")
        return manifest
    manifest = run_state.load(location)
    if manifest.status == run_state.FINISHED:
        return manifest
    accepted = run_state.check_resumable(manifest, redacted, fingerprint, force, str(location))
    if accepted:
        log.warning("resuming with config changes that do not alter outputs: %s", "; ".join(accepted))
        manifest.config = redacted
        save_config(plain, location)
        run_state.save(location, manifest)
    return manifest


def _locate_and_check_lengths(config: RunConfig, reader, problems):
    """Resolve the model and measure the first prompts; raise every problem found so far."""
    location = models.locate(config.model)
    log.info("model %s loads from %s %s", config.model.name, location.source, location.note)
    lengths = preflight.measure_prompt_lengths(config, location.source, reader.head(config.errors.length_check_rows))
    too_long = lengths.problem if lengths else None
    if too_long and config.errors.on_row_error == OnRowError.fail:
        problems = problems + [too_long]
    elif too_long:
        log.warning("%s", too_long)
    if problems:
        raise preflight.PreflightError(problems)
    return location, lengths


def _execute(config: RunConfig, model: models.ModelLocation, location: Location, reader, scan, manifest, outcome: RunOutcome, outputs_root: Path) -> bool:
    """Run the rows not yet done, account for every row, write the figures, seal the run."""
    id_column = manifest.id_column
    n = config.prompt.n
    done_keys = run_state.finished_ids(location, id_column)
    done, partly_done = samples.split_done(done_keys, n)
    to_run = sum(n - len(partly_done.get(row_id, ())) for chunk in scan.chunks for row_id in chunk.ids if row_id not in done)
    if done_keys:
        log.info("resuming %s: %d result row(s) done, %d to run", location, len(done_keys), to_run)
    if to_run:
        attempt = {"started_at": time.time(), "rows_to_run": to_run}
        manifest.attempts.append(attempt)
        run_state.save(location, manifest)
        if cluster.needs_publishing(config, model.source):
            # The driver's converted copy is on its disk only; the engines fetch this one.
            published = cluster.publish_model(model.source, cluster.models_root(config, outputs_root))
            model = models.ModelLocation(published, model.load_format, f"(published from {model.source})")
        try:
            with sysmon.SystemMonitor() as monitor:
                finished = pipeline.run(config, model, location, reader, scan, done, partly_done)
        except pipeline.EngineNotReady as error:
            raise RunIncomplete(f"{error}. Rows already written are kept; finish it with: {resume_command(location)}") from None
        attempt.update(started_at=finished.started_at, finished_at=finished.finished_at, engine=finished.engine)
        outcome.pipeline_run = finished
        run_state.save(location, manifest)
        location.child(tracking.SYSTEM_CSV).write_text(monitor.csv_text())
        faults.reached("pipeline_done")
        outcome.metrics.update(monitor.summary())
    counts = accounting.settle(location, id_column, scan.rows, n)
    faults.reached("settled")
    measured = [a for a in manifest.attempts if a.get("finished_at")]
    if measured:
        last = measured[-1]
        outcome.metrics.update(
            metrics.compute(location.child(run_state.RESULTS), last["started_at"], last["finished_at"], config.hw, config.processor.concurrency)
        )
    outcome.counts = counts.as_dict()
    outcome.metrics.update(outcome.counts, attempts=len(manifest.attempts))
    if counts.rows_failed and counts.balanced:
        log.warning("%d row(s) failed; they are in %s with their reasons", counts.rows_failed, location.child(run_state.FAILED))
    figures = {
        "status": run_state.FINISHED if counts.balanced else run_state.RUNNING,
        "metrics": outcome.metrics,
        "prompt_columns": list(prompt.column_map(config.prompt).values()),
    }
    if measured and measured[-1].get("engine"):
        figures["engine"] = measured[-1]["engine"]  # which engine the figures were measured on
    location.child(run_state.METRICS).write_text(json.dumps(figures, indent=2))
    faults.reached("metrics_written")
    if counts.balanced:
        manifest.status, manifest.counts = run_state.FINISHED, counts.as_dict()
        run_state.save(location, manifest)
    log.info("results: %s", location.child(run_state.RESULTS))
    log.info("metrics: %s", json.dumps({k: round(v, 3) for k, v in outcome.metrics.items()}))
    return counts.balanced


def _track(config: RunConfig, location: Location, outputs_root: Path, parent_run_id, tags, tracking_problem, outcome: RunOutcome) -> None:
    relog = f"python -m runner.track {location}"
    if tracking_problem:
        outcome.tracking_error = tracking_problem
    else:
        try:
            outcome.mlflow_run_id = tracking.log_run_folder(location, outputs_root, parent_run_id, tags)
            uri = outcome.tracking_uri = tracking.resolve_uri(config.tracking, outputs_root)
            opened = "" if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}, then "
            log.info("MLflow run %s at %s; see it with: %s%s", outcome.mlflow_run_id, uri, opened, tracking.run_link(outcome.mlflow_run_id, uri))
            return
        except Exception as error:  # noqa: BLE001 - results are safe whatever the store says
            outcome.tracking_error = f"{type(error).__name__}: {error}"
    log.error("tracking failed (%s); the results are in %s. Re-log them with: %s", outcome.tracking_error, location, relog)
