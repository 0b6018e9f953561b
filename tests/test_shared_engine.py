"""A sweep over an engine setting: each setting gets its own engine, the old one stopped
before the new one starts, and Ctrl-C in the middle of the sweep (while the new engine loads)
leaves every finished row written and no engine process behind. (Jobs sharing one engine:
test_sweep.py.)"""

import json
import os
import re
import signal
import time

import mlflow
import pytest

from tests.e2e_helpers import read_results, run_cli
from tests.test_resilience import engine_processes, start_background_run

ROWS = 8
SWEEP = (
    "-m", "engine.max_num_seqs=4,8", f"dataset.limit={ROWS}", "processor.batch_size=4", "processor.rows_per_file=4",
    "prompt.max_tokens=24", "hydra.sweep.dir=outputs/multirun/engines",
)


def engine_cores(since: float):
    return [p for p in engine_processes(since) if "EngineCore" in " ".join(p.info["cmdline"] or []) + (p.info["name"] or "")]


def wait_for_second_engine(log_path, proc, timeout: float = 300) -> None:
    """Until the second engine is loading: its start is logged (the first one's stop before it)
    and its engine core process exists."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if log_path.exists() and len(re.findall(r"engine (\S+): starting", log_path.read_text())) == 2 and engine_cores(deadline - timeout):
            return
        time.sleep(0.2)
    pytest.fail(f"the second engine did not start within {timeout} s (exit {proc.poll()})")


@pytest.mark.slow
def test_a_new_engine_setting_replaces_the_engine_and_ctrl_c_mid_sweep_leaves_nothing(tmp_path):
    """The first job runs on its engine; the second setting stops it and starts another, and
    Ctrl-C lands while that one loads (rows written mid-run and kept: test_resilience)."""
    started = time.time()
    sweep_dir = tmp_path / "outputs/multirun/engines"
    proc = start_background_run(tmp_path, *SWEEP)
    wait_for_second_engine(tmp_path / "run.log", proc)
    # The second job's engine runs alone: the first one's was stopped before it started.
    cores = engine_cores(started)
    assert len(cores) == 1, [(p.pid, p.info["cmdline"]) for p in cores]
    # vLLM's engine core was forked from the replica's fork server, its imports done ahead
    # (runner.engine_core_fork), not spawned to import vLLM again.
    server = cores[0].parent()
    assert "multiprocessing.forkserver" in " ".join(server.cmdline()), server.cmdline()
    assert "ServeReplica:" in " ".join(server.parent().cmdline()), server.parent().cmdline()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130, (tmp_path / "run.log").read_text()[-3000:]

    deadline = time.time() + 30
    while engine_processes(started) and time.time() < deadline:
        time.sleep(1)
    assert [(p.pid, p.info["name"]) for p in engine_processes(started)] == []

    log = (tmp_path / "run.log").read_text()
    engines = re.findall(r"engine (\S+): starting", log)
    assert len(engines) == 2 and engines[0] != engines[1], engines
    assert log.index(f"engine {engines[0]}: stopped") < log.index(f"engine {engines[1]}: starting")

    # The finished job is whole and logged; the interrupted one says how to finish it.
    first = read_results(sweep_dir / "0" / "results")
    assert len(first) == ROWS and all(r["generated_text"] for r in first)
    figures = json.loads((sweep_dir / "0" / "metrics.json").read_text())
    assert figures["status"] == "finished"
    # Its two 4-row blocks went to the engine together, to keep twice its 4 sequences there
    # (runner.batches_in_flight): a caller that took one block at a time kept 4.
    assert figures["metrics"]["engine_requests_peak"] == ROWS
    assert f"no row was written yet. Finish it with: python -m runner.resume {sweep_dir / '1'}" in log
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    job = mlflow.search_runs(experiment_names=["runner"], filter_string="tags.`runner.role` = 'job'").iloc[0]
    assert job["tags.runner.engine"] == engines[0] and job["tags.runner.engine_started"] == "true"
    assert job["params.engine.max_num_seqs"] == "4"


@pytest.mark.slow
def test_an_engine_not_up_in_time_fails_its_job_with_that_reason_and_leaves_nothing(tmp_path):
    """The job that starts the shared engine does not wait for it: its callers start meanwhile
    and wait. One not up by ray.engine_start_timeout_s fails the job with that reason (not Ray
    Data's wrapped copy), the resume line, and no engine process left."""
    started = time.time()
    done = run_cli(tmp_path, "processor.shared_engine=true", "ray.engine_start_timeout_s=3", "dataset.limit=4")
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "the engine did not start within ray.engine_start_timeout_s=3 s: DEPLOYING. Rows already written are kept; finish it with: python -m runner.resume" in output, output[-3000:]
    assert re.search(r"engine \S+: stopped", output) and not re.search(r"engine \S+: ready", output)
    deadline = time.time() + 30
    while engine_processes(started) and time.time() < deadline:
        time.sleep(1)
    assert [(p.pid, p.info["name"]) for p in engine_processes(started)] == []
