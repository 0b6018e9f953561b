"""Nothing lost: clean shutdown on Ctrl-C and SIGTERM, fail-fast before the run.

Failed rows, killed runs and a tracking outage: tests/test_exactly_once.py."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e_helpers import ROOT, SAMPLE_NEWS, read_results, run_cli

ENGINE_PROCESS_MARKERS = ("ray::", "raylet", "gcs_server", "VLLM", "EngineCore", "default_worker", "dashboard")


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


@pytest.mark.slow
def test_ctrl_c_leaves_no_engine_or_ray_process_and_readable_results(tmp_path):
    started = time.time()
    run_dir = tmp_path / "outputs/runs/interrupted"
    proc = start_background_run(tmp_path, *SLOW_TRICKLE, "hydra.run.dir=outputs/runs/interrupted")
    wait_for_partial_results(run_dir / "results", proc)
    assert engine_processes(started), "the run should have engine processes while it runs"
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert_clean_shutdown(started, run_dir, "by Ctrl-C")


def assert_clean_shutdown(started: float, run_dir: Path, how: str) -> None:
    deadline = time.time() + 30
    while engine_processes(started) and time.time() < deadline:
        time.sleep(1)
    left = [(p.pid, p.info["name"]) for p in engine_processes(started)]
    assert left == []
    rows = read_results(run_dir / "results")
    assert rows and all(r["generated_text"] for r in rows)
    said = f"the run was interrupted {how}; rows already written are kept. Finish it with: python -m runner.resume {run_dir}"
    assert said in (run_dir.parents[2] / "run.log").read_text()
    assert said in (run_dir / "__main__.log").read_text()  # the run's own log ends with it too


def engine_environments(since: float) -> dict:
    """pid -> environment of the vLLM engine's processes (the Ray actor and its EngineCore)."""
    found = {}
    for proc in engine_processes(since):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        if "vLLM" in text or "EngineCore" in text:
            try:
                found[proc.pid] = (text[:120], proc.environ())
            except psutil.Error:
                continue
    return found


@pytest.mark.slow
def test_sigterm_shuts_down_like_ctrl_c_and_exits_143(tmp_path):
    """Seen: SIGTERM ended the run with exit 15, no resume line, no end line in the log."""
    started = time.time()
    token = "hf_InheritedByTheEngine0123456789abcdef"
    run_dir = tmp_path / "outputs/runs/terminated"
    proc = start_background_run(tmp_path, *SLOW_TRICKLE, "hydra.run.dir=outputs/runs/terminated", env={"HF_TOKEN": token})
    wait_for_partial_results(run_dir / "results", proc)
    # The engine got the token by inheritance from the driver (what a hub download reads), not runtime_env.
    engines = engine_environments(started)
    assert engines, "no vLLM engine process found"
    assert all(environ.get("HF_TOKEN") == token for _, environ in engines.values()), {p: t for p, (t, _) in engines.items()}
    os.killpg(proc.pid, signal.SIGTERM)  # what a scheduler or `kill` sends, to the whole group
    assert proc.wait(timeout=120) == 143, (tmp_path / "run.log").read_text()[-3000:]
    assert_clean_shutdown(started, run_dir, "by SIGTERM")
