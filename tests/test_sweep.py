"""A real sweep on the CPU default: parent run, nested jobs, a failed job, the comparison, and
the jobs sharing one engine (runner.warm_engine)."""

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import TASK_SWEEP_ROWS
from tests.e2e_helpers import run_cli

SECOND_SWEEP_ROWS = 6

PER_JOB_METRICS = [
    "startup_s", "generation_s", "wall_s", "rows_per_s", "output_tokens_per_s", "total_tokens_per_s",
    "steady_rows_per_s", "steady_output_tokens_per_s", "steady_total_tokens_per_s", "latency_p50_s", "latency_p95_s",
    "cost_per_1m_output_tokens_usd", "cost_per_1k_rows_usd", "cpu_utilization_mean_pct", "driver_rss_peak_mb", "engine_requests_peak",
]


@pytest.fixture(scope="module")
def two_sweeps(prompt_sweep):
    # The first sweep is the shared one over three prompts; a second sweep in the same store,
    # over two batch sizes, each with a job that cannot start, must not mix with it.
    cwd, first, _ = prompt_sweep
    second = run_cli(cwd, "-m", "prompt=summarize", "processor.batch_size=1,8", "prompt.max_tokens=24,5000", f"dataset.limit={SECOND_SWEEP_ROWS}",
                     "tracking.compare_metric=wall_s")
    # Two of its four jobs fail at the checks: the others run, and the sweep exits 1 saying so.
    assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-5000:]
    assert "2 of 4 job(s) of the sweep failed" in second.stderr + second.stdout
    mlflow.set_tracking_uri(f"sqlite:///{cwd}/outputs/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["runner"], order_by=["attributes.start_time ASC"])
    sweeps = runs[runs["tags.runner.role"] == "sweep"]
    assert len(sweeps) == 2, "another test logged a sweep to this store"
    return cwd, first, second, runs


def children_of(runs, parent_id):
    return runs[runs["tags.mlflow.parentRunId"] == parent_id]


@pytest.mark.slow
def test_each_sweep_is_a_parent_with_its_own_jobs(two_sweeps):
    _, _, _, runs = two_sweeps
    parents = runs[runs["tags.runner.role"] == "sweep"]
    assert len(parents) == 2 and parents["tags.runner.sweep_id"].nunique() == 2
    first, second = parents.iloc[0], parents.iloc[1]
    first_jobs = children_of(runs, first.run_id)
    assert sorted(first_jobs["tags.runner.overrides"]) == [
        f"prompt={name} dataset.limit={TASK_SWEEP_ROWS}" for name in ("classify", "extract", "summarize")
    ]
    assert set(first_jobs["tags.runner.sweep_id"]) == {first["tags.runner.sweep_id"]}
    for _, job in first_jobs.iterrows():
        assert job["metrics.rows"] + job["metrics.rows_failed"] == TASK_SWEEP_ROWS and job["status"] == "FINISHED"
        for metric in PER_JOB_METRICS:
            assert job[f"metrics.{metric}"] >= 0, metric
        assert job["metrics.startup_s"] > 0 and job["metrics.steady_output_tokens_per_s"] > job["metrics.output_tokens_per_s"]
    second_jobs = children_of(runs, second.run_id)
    assert len(second_jobs) == 4 and set(second_jobs["tags.runner.sweep_id"]) == {second["tags.runner.sweep_id"]}


def assert_one_engine_started_once(jobs, rows):
    """The jobs ran on one engine that the first of them started; the others waited for
    none of its start-up, and every job's rows are complete."""
    jobs = jobs.sort_values("start_time")
    assert jobs["tags.runner.engine"].nunique() == 1 and set(jobs["tags.runner.engine_mode"]) == {"shared"}
    assert list(jobs["tags.runner.engine_started"]) == ["true"] + ["false"] * (len(jobs) - 1)
    first, later = jobs.iloc[0], jobs.iloc[1:]
    for _, job in later.iterrows():
        assert job["metrics.startup_s"] < first["metrics.startup_s"] / 3, (job["metrics.startup_s"], first["metrics.startup_s"])
    assert all(jobs["metrics.rows_ok"] + jobs["metrics.rows_failed"] == rows) and all(jobs["metrics.rows_in"] == rows)


@pytest.mark.slow
def test_a_sweeps_jobs_share_one_engine(two_sweeps):
    cwd, _, _, runs = two_sweeps
    first, second = runs[runs["tags.runner.role"] == "sweep"].iloc[0], runs[runs["tags.runner.role"] == "sweep"].iloc[1]
    assert_one_engine_started_once(children_of(runs, first.run_id), TASK_SWEEP_ROWS)
    # The job that started the engine did not wait for it first: its callers (Ray Data's
    # actors) started while the engine loaded.
    engine = children_of(runs, first.run_id).sort_values("start_time").iloc[0]["tags.runner.engine"]
    log = (cwd / "outputs/multirun/e2e/0/__main__.log").read_text()
    assert log.index(f"engine {engine}: starting") < log.index("(MapWorker(") < log.index(f"engine {engine}: ready"), log[-3000:]
    # Two batch sizes on one engine, a job that could not start between them.
    ran = children_of(runs, second.run_id)
    ran = ran[ran["status"] == "FINISHED"]
    assert sorted(ran["params.processor.batch_size"]) == ["1", "8"]
    assert_one_engine_started_once(ran, SECOND_SWEEP_ROWS)
    # Each sweep stopped its engine at its end: the second could not reuse the first's.
    assert set(ran["tags.runner.engine"]).isdisjoint(children_of(runs, first.run_id)["tags.runner.engine"])


@pytest.mark.slow
def test_batches_of_one_row_still_fill_the_engine(two_sweeps):
    # One block of 6 rows in batches of 1: Ray Data's own limit kept 4 batches of a block at
    # the engine (4 requests); the job sizes it to the engine's 32 sequences (runner.batches_in_flight).
    _, _, _, runs = two_sweeps
    second = runs[runs["tags.runner.role"] == "sweep"].iloc[1]
    jobs = children_of(runs, second.run_id)
    job = jobs[(jobs["status"] == "FINISHED") & (jobs["params.processor.batch_size"] == "1")].iloc[0]
    assert job["metrics.rows_ok"] == SECOND_SWEEP_ROWS
    assert job["metrics.engine_requests_peak"] == SECOND_SWEEP_ROWS


@pytest.mark.slow
def test_a_failed_job_is_recorded_and_the_sweep_goes_on(two_sweeps):
    _, _, second, runs = two_sweeps
    parent = runs[runs["tags.runner.role"] == "sweep"].iloc[1]
    jobs = children_of(runs, parent.run_id)
    failed = jobs[jobs["status"] == "FAILED"]
    assert len(failed) == 2
    for _, job in failed.iterrows():
        assert "prompt.max_tokens=5000" in job["tags.runner.overrides"] and "prompt.max_tokens=5000" in job["tags.runner.error"]
    assert (jobs["status"] == "FINISHED").sum() == 2
    assert parent["metrics.jobs"] == 4 and parent["metrics.jobs_failed"] == 2


@pytest.mark.slow
def test_the_comparison_is_printed_and_plotted_on_the_parent(two_sweeps):
    cwd, first, _, runs = two_sweeps
    parent = runs[runs["tags.runner.role"] == "sweep"].iloc[0]
    jobs = children_of(runs, parent.run_id)
    fastest = jobs.sort_values("metrics.output_tokens_per_s", ascending=False).iloc[0]
    label = fastest["params.prompt.name"]
    table_lines = [line for line in first.stdout.splitlines() if "fastest" in line]
    assert table_lines and label in table_lines[0].split()
    names = {a.path for a in MlflowClient().list_artifacts(parent.run_id)}
    assert {"comparison.png", "comparison.txt"} <= names
    png = MlflowClient().download_artifacts(parent.run_id, "comparison.png", str(cwd))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_comparison_ranks_by_the_metric_the_sweep_names(two_sweeps):
    _, _, second, runs = two_sweeps
    parent = runs[runs["tags.runner.role"] == "sweep"].iloc[1]
    jobs = children_of(runs, parent.run_id)
    quickest = jobs[jobs["status"] == "FINISHED"].sort_values("metrics.wall_s").iloc[0]
    assert "sorted by wall_s (lowest first)" in second.stdout, second.stdout[-3000:]
    fastest = [line for line in second.stdout.splitlines() if line.startswith("fastest:")]
    assert fastest and f"processor.batch_size={quickest['params.processor.batch_size']}" in fastest[0], fastest
