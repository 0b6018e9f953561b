"""Nothing lost: clean shutdown on Ctrl-C and SIGTERM, fail-fast before the run.

Failed rows, killed runs and a tracking outage: tests/test_exactly_once.py."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e_helpers import ROOT, SAMPLE_NEWS, read_results, run_cli

# The engine core's fork server (runner.engine_core_fork) keeps Python's command line.
ENGINE_PROCESS_MARKERS = ("ray::", "raylet", "gcs_server", "VLLM", "EngineCore", "default_worker", "dashboard", "multiprocessing.forkserver")


# 3 good rows, 2 without the article text, 1 whose prompt cannot fit in 1,024 tokens.
MIXED_RUN = ("dataset=jsonl", "engine.max_model_len=1024", "prompt.max_tokens=16")


def write_mixed_dataset(path: Path) -> None:
    good = [json.loads(line) for line in SAMPLE_NEWS.read_text().splitlines()[:3]]
    rows = [{"id": r["id"], "article": r["article"]} for r in good]
    rows += [{"id": "bad-null", "article": None}, {"id": "bad-missing"}, {"id": "bad-long", "article": " ".join(["word"] * 3000)}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_on_mixed_dataset(tmp_path: Path, *overrides: str):
    data = tmp_path / "mixed.jsonl"
    write_mixed_dataset(data)
    done = run_cli(tmp_path, *MIXED_RUN, f"dataset.path={data}", *overrides)
    return done, done.stdout + done.stderr


@pytest.mark.slow
def test_fail_fast_stops_before_the_run_on_a_prompt_that_cannot_fit(tmp_path):
    done, output = run_on_mixed_dataset(tmp_path, "errors.on_row_error=fail", "hydra.run.dir=outputs/runs/strict")
    assert done.returncode == 2, output[-3000:]
    assert "1 of the first 4 rows need more than max_model_len=1024" in output and "Traceback" not in output
    # Reported together with the rows that cannot become prompts, each with file and line.
    assert "mixed.jsonl line 4: column 'article' is null" in output and "mixed.jsonl line 5: column 'article' is missing" in output
    assert not (tmp_path / "outputs/runs/strict").exists()  # nothing ran: no run folder to mistake for one


def start_background_run(cwd: Path, *overrides: str, env: dict = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    # Its own process group: Ctrl-C in a terminal signals the whole foreground group. A shell
    # starts background jobs (a CI script run with `&`, say) with SIGINT ignored, and the run
    # would inherit that; a terminal's foreground job has the default, so restore it.
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *overrides], cwd=cwd, env=env,
        stdout=open(cwd / "run.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_partial_results(results_dir: Path, proc: subprocess.Popen, files: int = 2, timeout: float = 400) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(glob.glob(str(results_dir / "*.parquet"))) >= files:
            return
        time.sleep(0.2)
    pytest.fail(f"no partial results within {timeout} s (exit {proc.poll()})")


# One batch in flight at a time, so results land batch by batch and a kill falls mid-run.
SLOW_TRICKLE = ("processor.batch_size=4", "processor.rows_per_file=4", "processor.max_concurrent_batches=1", "prompt.max_tokens=48")


def engine_processes(since: float):
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "create_time"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
            if proc.info["create_time"] >= since - 1 and any(marker in text for marker in ENGINE_PROCESS_MARKERS):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def assert_clean_shutdown(started: float, run_dir: Path, how: str, rows_written: bool = True, log_path: Path = None) -> None:
    deadline = time.time() + 30
    while engine_processes(started) and time.time() < deadline:
        time.sleep(1)
    left = [(p.pid, p.info["name"]) for p in engine_processes(started)]
    assert left == []
    if rows_written:
        rows = read_results(run_dir / "results")
        assert rows and all(r["generated_text"] for r in rows)
        kept = "rows already written are kept"
    else:
        assert not glob.glob(str(run_dir / "results" / "*.parquet"))
        kept = "no row was written yet"
    said = f"the run was interrupted {how}; {kept}. Finish it with: python -m runner.resume {run_dir}"
    assert said in (log_path or run_dir.parents[2] / "run.log").read_text()
    assert said in (run_dir / "__main__.log").read_text()  # the run's own log ends with it too


def descendants(proc: subprocess.Popen) -> set:
    """Pids of everything a run started (its local Ray, the workers, vLLM's processes)."""
    try:
        return {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
    except psutil.Error:
        return set()


def wait_for_engine_start(proc: subprocess.Popen, timeout: float = 300) -> psutil.Process:
    """Until vLLM's engine core process of this run exists (the engine is loading); returns it."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for pid in descendants(proc):
            try:
                core = psutil.Process(pid)
                if "EngineCore" in " ".join(core.cmdline()) + core.name():
                    return core
            except psutil.Error:
                continue
        time.sleep(0.2)
    pytest.fail(f"no engine core started within {timeout} s (exit {proc.poll()})")


def fork_servers(run: subprocess.Popen) -> set:
    """Pids of the run's processes that run (or were forked from) a multiprocessing fork server."""
    found = set()
    for pid in descendants(run):
        try:
            if "multiprocessing.forkserver" in " ".join(psutil.Process(pid).cmdline()):
                found.add(pid)
        except psutil.Error:
            continue
    return found


def engine_environments(since: float, run: subprocess.Popen) -> dict:
    """pid -> environment of the run's vLLM engine processes (the Ray actor and its EngineCore)."""
    found = {}
    mine = descendants(run)
    for proc in engine_processes(since):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        if proc.pid in mine and ("vLLM" in text or "EngineCore" in text):
            try:
                found[proc.pid] = (text[:120], proc.environ())
            except psutil.Error:
                continue
    return found


# A sweep of two jobs on one shared engine (runner.warm_engine), rows in trickles. The first
# job is SIGTERMed once its first file is written: its 40 rows keep it going well past that
# (16 had ended it while the test still waited on the other run's Ctrl-C, on 2 cores).
SHARED_ENGINE_SWEEP = (
    "-m", "processor.batch_size=4,8", "processor.rows_per_file=4", "processor.max_concurrent_batches=1", "prompt.max_tokens=48",
    "dataset.limit=40", "hydra.sweep.dir=outputs/multirun/s",
)


@pytest.mark.slow
def test_ctrl_c_while_the_engine_loads_and_sigterm_mid_sweep_leave_nothing_running(tmp_path):
    """Two runs at once (one engine start-up's wait for the suite instead of two): Ctrl-C to a
    job while its engine is still loading, and SIGTERM (what a scheduler or `kill` sends) to a
    sweep on the shared engine once its first job's rows flow, each to its whole process group.
    Each exits as the rule says (130, 143) with the resume line, no process of either is left,
    and what was written stays. Seen before: SIGTERM ended a run with exit 15, no resume line,
    no end line in the log; and in a shared-engine sweep's first job the driver died in Ray's
    C++ SIGTERM handler (exit -6 or 1) instead."""
    started = time.time()
    token = "hf_InheritedByTheEngine0123456789abcdef"
    for name in ("ctrl_c", "sweep"):
        (tmp_path / name).mkdir()
    interrupted_dir = tmp_path / "ctrl_c/outputs/runs/interrupted"
    swept_dir = tmp_path / "sweep/outputs/multirun/s/0"
    swept = start_background_run(tmp_path / "sweep", *SHARED_ENGINE_SWEEP, env={"HF_TOKEN": token})
    # The single job on its own engine (Ray Data LLM's): the shared engine's interruption is the sweep's.
    interrupted = start_background_run(tmp_path / "ctrl_c", *SLOW_TRICKLE, "processor.shared_engine=false", "hydra.run.dir=outputs/runs/interrupted")
    try:
        core = wait_for_engine_start(interrupted)
        # A job's own engine (Ray Data LLM's actor) forks its engine core from the fork server
        # too (runner.engine_core_fork, started by runner.worker_setup), not spawned to import vLLM again.
        assert "multiprocessing.forkserver" in " ".join(core.parent().cmdline()), core.parent().cmdline()
        assert "vLLMEngineStageUDF" in " ".join(core.parent().parent().cmdline()), core.parent().parent().cmdline()
        # Only that actor: the run's other workers (its light stages among them) start no server.
        assert fork_servers(interrupted) - {core.pid} == {core.parent().pid}
        os.killpg(interrupted.pid, signal.SIGINT)

        wait_for_partial_results(swept_dir / "results", swept, files=1)
        # The engine got the token by inheritance from the driver (what a hub download reads), not runtime_env.
        engines = engine_environments(started, swept)
        assert engines, "no vLLM engine process found"
        assert all(environ.get("HF_TOKEN") == token for _, environ in engines.values()), {p: t for p, (t, _) in engines.items()}
        os.killpg(swept.pid, signal.SIGTERM)
        assert interrupted.wait(timeout=120) == 130, (tmp_path / "ctrl_c/run.log").read_text()[-3000:]
        assert swept.wait(timeout=120) == 143, (tmp_path / "sweep/run.log").read_text()[-3000:]
        assert "runner: " not in (tmp_path / "sweep/run.log").read_text(), "the first job ended before the SIGTERM"
    finally:
        for run in (interrupted, swept):
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
    assert_clean_shutdown(started, interrupted_dir, "by Ctrl-C", rows_written=False)
    assert_clean_shutdown(started, swept_dir, "by SIGTERM", log_path=tmp_path / "sweep/run.log")


@pytest.mark.slow
def test_sigterm_between_a_sweeps_jobs_ends_by_the_rule_and_leaves_nothing(tmp_path):
    """SIGTERM to the sweep's process group once its first job has ended and before the next
    begins (runner.faults sends it there: a scheduler's timing, which a test cannot hit).
    Seen before: exit 15 (Ray's handler, set by ray.init, raising outside any job), no word of
    what was kept."""
    started = time.time()
    run = start_background_run(
        tmp_path, "-m", "processor.batch_size=1,2", "dataset.limit=2", "prompt.max_tokens=8", "hydra.sweep.dir=outputs/multirun/b",
        env={"RUNNER_KILL_AT": "job_ended:1", "RUNNER_KILL_SIGNAL": "SIGTERM"},
    )
    try:
        code = run.wait(timeout=300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    log = (tmp_path / "run.log").read_text()
    assert code == 143, log[-3000:]
    assert ("the sweep was interrupted by SIGTERM outside its jobs (between two, or while it closed): the 1 job(s) that ended "
            "are complete and logged (0 failed)") in log, log[-3000:]
    assert re.search(r"sweep \S+ stopped before its jobs were done \(1 of them ran\); its MLflow parent run \S+ is closed as FAILED", log)
    sweep_dir = tmp_path / "outputs/multirun/b"
    assert len(read_results(sweep_dir / "0" / "results")) == 2
    assert not (sweep_dir / "1").exists()
    deadline = time.time() + 30
    while engine_processes(started) and time.time() < deadline:
        time.sleep(1)
    assert [(p.pid, p.info["name"]) for p in engine_processes(started)] == []
