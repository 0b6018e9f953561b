"""Exactly once under any kill: a run SIGKILLed at every phase and resumed.

The same kill and resume on S3, on a two-node cluster whose second node cannot see the
driver's disk, is tests/test_cluster.py's (one engine start-up fewer for the suite than a
separate S3 run here).

Each step kills the whole process group (driver, Ray, engine) at a named point of the run
(runner.faults), then the next step resumes it. The input mixes good rows with rows that
must fail (bad JSON, null, number, empty text, missing, a prompt longer than the engine's
context), so failed-row accounting is killed too, and the last step finds the tracking
store down and loses nothing.
After every step no id may be in the results twice; at the end every input id is in the
results or in failed/ exactly once, and resuming the finished run adds nothing.
"""

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mlflow
import pytest

from runner import result_files, samples, storage
from tests.e2e_helpers import ROOT, SAMPLE_NEWS

# Results land two rows to a file, one batch in flight, so kills fall between writes. On the
# shared engine, the default path of a single job (its own engine's kills: test_cluster.py).
TRICKLE = (
    "processor.batch_size=2", "processor.rows_per_file=2", "processor.max_concurrent_batches=1", "prompt.max_tokens=12",
    "tracking.enabled=false", "engine.max_model_len=1024", "processor.shared_engine=true",
)
GOOD_ROWS = 10


def write_input(lines_out) -> list:
    """Ten good articles and six rows that must fail; returns every id a run must account for."""
    articles = [json.loads(line) for line in SAMPLE_NEWS.read_text().splitlines()[:GOOD_ROWS]]
    lines = [json.dumps({"id": a["id"], "article": a["article"]}) for a in articles]
    lines.insert(3, json.dumps({"id": "bad-null", "article": None}))
    lines.insert(5, '{"id": "bad-json", "article": "cut off')  # not JSON: its id is derived from file and line
    lines.insert(7, json.dumps({"id": "bad-number", "article": 12345}))
    lines.insert(9, json.dumps({"id": "bad-empty", "article": "   "}))
    lines.append(json.dumps({"id": "bad-missing"}))
    lines.append(json.dumps({"id": "bad-long", "article": " ".join(["word"] * 3000)}))  # the engine refuses it
    lines_out("\n".join(lines) + "\n")
    bad_json_line = lines.index('{"id": "bad-json", "article": "cut off') + 1
    return [a["id"] for a in articles] + ["bad-null", f"input.jsonl:{bad_json_line}", "bad-number", "bad-empty", "bad-missing", "bad-long"]


def launch(cwd: Path, args, kill_at, env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **env}
    full_env.pop("RUNNER_KILL_AT", None)
    if kill_at:
        full_env["RUNNER_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=900,
        start_new_session=True,  # the kill takes the run's whole process group, as a node failure would
    )


def ids_in(folder: storage.Location):
    """Each row's key: its id, and its sample index in a run with prompt.n > 1."""
    ids = []
    for entry in folder.list_files():
        ids += result_files.read_keys(folder.fs, entry.path, "id")
    return ids


def ok_ids(run: storage.Location):
    ids = []
    for entry in run.child("results").list_files():
        table = result_files.read_table(run.fs, entry.path)
        ids += [k for k, error in zip(result_files.row_keys(table, "id"), table["error"].to_pylist()) if not error]
    return ids


# (where the run is killed, what a person would run): the first starts the run, the rest resume it.
STEPS = [
    ("manifest_written", "run"),  # run state written, Ray not started
    ("ray_started", "resume"),  # Ray up, nothing read yet
    ("results_written:2", "resume"),  # mid-generation, two result files out
    ("pipeline_done", "resume"),  # every row written, nothing accounted or sealed
    ("failed_rows_moved", "resume"),  # accounting: failed rows copied to failed/, not yet dropped from results/
    ("metrics_written", "resume"),  # figures written, run not sealed
    (None, "resume"),
]


def kill_and_resume_everywhere(cwd: Path, run_uri: str, data_uri: str, env: dict, steps=STEPS, overrides=(), last_resume_args=()):
    run = storage.resolve(run_uri)
    outputs = []
    for kill_at, action in steps:
        if action == "run":
            args = ["runner", *TRICKLE, *overrides, "dataset=jsonl", f"dataset.path={data_uri}", "hydra.run.dir=outputs/runs/k"]
            if run_uri.startswith("s3://"):
                args.append(f"output.uri={run_uri.rsplit('/runs/k', 1)[0]}")
        else:
            args = ["runner.resume", run_uri, *(last_resume_args if kill_at is None else ())]
        done = launch(cwd, args, kill_at, env)
        outputs.append(done.stdout + done.stderr)
        tail = outputs[-1][-4000:]
        if kill_at:
            assert done.returncode == -signal.SIGKILL, f"{kill_at}: the run was not killed there (exit {done.returncode})\n{tail}"
        else:
            assert done.returncode == 0, tail
        # Whatever the kill left, no row is in the results twice.
        written = Counter(ok_ids(run))
        assert not [i for i, n in written.items() if n > 1], f"after {kill_at}: {written}"
    return run, outputs


def assert_exactly_once(run: storage.Location, expected_ids, n=1):
    ok, failed = ok_ids(run), ids_in(run.child("failed"))
    counts = Counter(ok + failed)
    expected_keys = [samples.key(i, k) for i in expected_ids for k in range(n)] if n > 1 else expected_ids
    assert sorted(counts) == sorted(expected_keys) and max(counts.values()) == 1, counts
    assert len(ok) == GOOD_ROWS * n
    reasons = {}
    for entry in run.child("failed").list_files():
        for row in result_files.read_table(run.fs, entry.path, ["id", "error"]).to_pylist():
            reasons[row["id"]] = row["error"]
    assert all(reasons.values()), reasons
    manifest = json.loads(run.child("manifest.json").read_text())
    metrics = json.loads(run.child("metrics.json").read_text())["metrics"]
    unit = "samples" if n > 1 else "rows"
    assert manifest["status"] == "finished" and manifest["counts"][f"{unit}_ok"] == GOOD_ROWS * n
    assert (metrics["rows_in"], metrics[f"{unit}_ok"], metrics[f"{unit}_failed"]) == (16, 10 * n, 6 * n)


def assert_resuming_a_finished_run_adds_nothing(cwd, run, env):
    before = sorted(ids_in(run.child("results"))), sorted(ids_in(run.child("failed")))
    again = launch(cwd, ["runner.resume", run.uri], None, env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stdout
    assert (sorted(ids_in(run.child("results"))), sorted(ids_in(run.child("failed")))) == before


@pytest.mark.slow
def test_killed_at_every_phase_on_local_disk_each_row_and_sample_once(tmp_path):
    data = tmp_path / "input.jsonl"
    expected = write_input(data.write_text)
    # Two samples per row, so each (id, sample) pair must come out once as well, including
    # rows a kill left with one sample written.
    # The last resume logs to a tracking store that is down (port 9 answers nothing).
    tracking_down = ("--force", "tracking.enabled=true", "tracking.uri=http://127.0.0.1:9")
    run, outputs = kill_and_resume_everywhere(
        tmp_path, str(tmp_path / "outputs/runs/k"), str(data), {}, overrides=("prompt.n=2",), last_resume_args=tracking_down
    )
    assert_exactly_once(run, expected, n=2)
    texts = {}
    for entry in run.child("results").list_files():
        for row in result_files.read_table(run.fs, entry.path, ["id", "sample_index", "generated_text"]).to_pylist():
            texts.setdefault(row["id"], set()).add(row["generated_text"])
    assert sum(len(t) == 2 for t in texts.values()) >= GOOD_ROWS // 2  # two seeds, mostly two different texts
    # The bad JSON line is named by file and line, in the log and in its failed row.
    bad_line = next(i for i in expected if i.startswith("input.jsonl:")).split(":")[1]
    assert any(f"input.jsonl line {bad_line}: not valid JSON" in o for o in outputs)
    failed = {r["id"]: r["error"] for e in run.child("failed").list_files() for r in result_files.read_table(run.fs, e.path).to_pylist()}
    assert f"input.jsonl line {bad_line}" in failed[f"input.jsonl:{bad_line}"]
    assert "article" in failed["bad-null"] and "article" in failed["bad-missing"]
    # The prompt that cannot fit was announced before the run, with the fix, and failed in the engine.
    assert "need more than max_model_len=1024" in outputs[0] and "engine.max_model_len=" in outputs[0]
    assert "maximum context length" in failed["bad-long"]
    assert_tracking_outage_lost_nothing(tmp_path, run, outputs[-1])
    assert_resuming_a_finished_run_adds_nothing(tmp_path, run, {})


def assert_tracking_outage_lost_nothing(cwd: Path, run: storage.Location, output: str):
    """The store was down: the run still finished, said so with the command that logs it
    later, and that command logs the finished run's figures."""
    assert "tracking failed" in output and f"python -m runner.track {run}" in output, output[-3000:]
    store = f"sqlite:///{cwd}/relogged.db"
    relog = launch(cwd, ["runner.track", str(run), "--uri", store, "--outputs-root", str(cwd / "outputs")], None, {})
    assert relog.returncode == 0, relog.stderr[-3000:]
    mlflow.set_tracking_uri(store)
    logged = mlflow.search_runs(experiment_names=["runner"]).iloc[0]
    assert (logged["metrics.rows_in"], logged["metrics.samples_ok"], logged["metrics.samples_failed"]) == (16, 20, 12)
