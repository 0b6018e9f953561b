"""Entry point: `python -m runner [group=option ...] [key=value ...]` (add -m for a sweep)."""

import logging
import shutil
import signal
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner import app, cli, errors, run_state, schema, sweep, tracking
from runner.config import to_object

schema.register()
log = logging.getLogger("runner")
STARTED_AT = time.time()
_terminated = False
# Set once Hydra composed the config and a job began: a failure from then on is not a refused command line.
_a_job_started = False


def _on_sigterm(signum, frame):
    """SIGTERM (a scheduler, `kill`, a container stop) shuts down like Ctrl-C: the pipeline's
    cleanup runs and the resume line is printed, where the default would end the process
    with neither."""
    global _terminated
    _terminated = True
    raise KeyboardInterrupt("SIGTERM")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> str:
    global _a_job_started
    _a_job_started = True
    job_started = time.time()  # a sweep's jobs share one process: STARTED_AT is the first job's
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    tags = sweep.job_tags(list(hydra_cfg.overrides.task))
    parent = sweep.current()["parent_run_id"]
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        outcome = app.run(to_object(cfg), run_dir, parent_run_id=parent, tags=tags)
        if not cfg.dry_run:
            print(outcome.summary(), flush=True)
        return "finished"
    except KeyboardInterrupt:
        _exit_interrupted(cfg, run_dir)
    except SystemExit as exit_:
        # Every ray.init, the runner's and the one inside Ray Data LLM's processor build, sets
        # a SIGTERM handler that raises SystemExit(15) where ours raised KeyboardInterrupt.
        if exit_.code != signal.SIGTERM:
            raise
        _exit_interrupted(cfg, run_dir, terminated=True)
    except Exception as error:
        if _terminated:  # whatever the interrupted code raised on its way out
            _exit_interrupted(cfg, run_dir)
        refused = isinstance(error, errors.RunnerError)
        if refused or isinstance(error, errors.RunIncomplete):
            log.error("%s", error)  # it says what to do
        else:
            log.exception("the run failed. %s", _resume_hint(cfg, run_dir))
        if not in_sweep:
            if refused:
                _remove_if_only_hydra_files(run_dir, hydra_cfg)
            sys.exit(errors.exit_code(error))
        # One failed job must not end the sweep: record it and let the next one run.
        _record_failure(cfg, error, parent, tags, job_started)
        return "failed"


def _resume_hint(cfg: DictConfig, run_dir: Path) -> str:
    """How to finish the run, saying rows were kept only where some were written."""
    try:
        location = app.run_location(OmegaConf.to_object(cfg), run_dir, Path(cfg.paths.outputs))
        if not location.child(run_state.MANIFEST).exists():
            return "It stopped before its run state was written: run the same command again"
        written = any(location.child(folder).list_files() for folder in (run_state.RESULTS, run_state.FAILED))
    except Exception as error:  # noqa: BLE001 - an unreachable store: say what we can
        return f"If it wrote a manifest.json, finish it with python -m runner.resume <its location> ({error})"
    kept = "rows already written are kept" if written else "no row was written yet"
    return f"{kept}. Finish it with: {app.resume_command(location)}"


def _interruption(terminated: bool):
    """How the run was interrupted, in words, and its exit code."""
    return ("by SIGTERM", errors.EXIT_SIGTERM) if terminated or _terminated else ("by Ctrl-C", errors.EXIT_CTRL_C)


def _exit_interrupted(cfg: DictConfig, run_dir: Path, terminated: bool = False) -> None:
    """Ctrl-C or SIGTERM, in a single run or a sweep: say so, and how to finish it."""
    how, code = _interruption(terminated)
    log.error("the run was interrupted %s; %s", how, _resume_hint(cfg, run_dir))
    sys.exit(code)


def _remove_if_only_hydra_files(run_dir: Path, hydra_cfg) -> None:
    """Hydra makes the run folder (.hydra/ and the log) before main() runs. A run refused by
    its checks wrote nothing else (but config.yaml, for the checks that need the model), and
    an empty run folder would only look like a run."""
    own = {hydra_cfg.output_subdir, f"{hydra_cfg.job.name}.log"}
    saved = run_dir / "config.yaml"
    if saved.is_file() and saved.stat().st_mtime >= STARTED_AT:  # this run's, not an earlier one's
        own.add(saved.name)
    try:
        if Path.cwd().resolve().is_relative_to(run_dir.resolve()) or not {p.name for p in run_dir.iterdir()} <= own:
            return
        for name in own:
            path = run_dir / str(name)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        run_dir.rmdir()
    except OSError as error:  # a folder left behind is no reason to hide the checks' message
        log.debug("could not remove %s: %s", run_dir, error)


def _record_failure(cfg: DictConfig, error: Exception, parent, tags, started_at: float) -> None:
    if not cfg.tracking.enabled:
        return
    try:
        # Not to_object's checks: a job refused for an unknown key is recorded too.
        tracking.log_failed_run(OmegaConf.to_object(cfg), Path(cfg.paths.outputs), f"{type(error).__name__}: {error}", parent, tags, started_at)
    except Exception as tracking_error:  # noqa: BLE001
        log.error("tracking: could not record the failed job (%s)", tracking_error)


def _exit_if_a_sweep_job_failed() -> None:
    """By the exit-code rule a sweep with a failed job failed (exit 1), though the others ran;
    Hydra ends a multirun with 0 whatever its jobs did."""
    if sweep.last_sweep["failed"]:
        log.error("%d of %d job(s) of the sweep failed; each is a FAILED run in MLflow with its error", sweep.last_sweep["failed"], sweep.last_sweep["jobs"])
        sys.exit(errors.EXIT_FAILED)


def _command() -> None:
    """The command, interrupted anywhere by the rule: inside a job, main() says how to finish
    it; outside one (Hydra composing a job's config, between a sweep's jobs, the sweep closing)
    the interrupt reaches here. Ray's handler, which every ray.init sets, exits with 15."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.hydra_command(main, job_started=lambda: _a_job_started)
    except KeyboardInterrupt:
        _exit_interrupted_outside_a_job(terminated=False)
    except SystemExit as exit_:
        if exit_.code != signal.SIGTERM:
            raise
        _exit_interrupted_outside_a_job(terminated=True)
    _exit_if_a_sweep_job_failed()


def _exit_interrupted_outside_a_job(terminated: bool) -> None:
    how, code = _interruption(terminated)
    if not sweep.current()["sweep_id"]:
        log.error("the run was interrupted %s before its job began or after it ended; a job that began said above how to finish it", how)
    else:
        ended, failed = sweep.last_sweep["jobs"], sweep.last_sweep["failed"]
        log.error(
            "the sweep was interrupted %s outside its jobs (between two, or while it closed): the %d job(s) that ended "
            "are complete and logged (%d failed); a job that had not begun has no run: run the sweep again for the values left", how, ended, failed,
        )
    sys.exit(code)


if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    _command()
