"""What a person sees in MLflow for a logged run folder, read back through MLflow's API from a
real SQLite store: the experiment's kind, the job's own start and end, system metrics on the
job's clock."""

import json
import time

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from runner import app, run_state, storage, sysmon, tracking
from runner.config import compose, to_dict, to_object

# A job that ran an hour ago: 5 s of checks, a 60 s pipeline, 5 s to settle and seal.
T0 = time.time() - 3600.0
PIPELINE = (T0 + 5.0, T0 + 65.0)
SEALED = T0 + 70.0


def make_run_folder(tmp_path, csv_text=None):
    config = to_dict(compose([f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]))
    run = storage.resolve(str(tmp_path / "outputs" / "runs" / "job"))
    manifest = run_state.Manifest(
        config=config, input={}, id_column="id", status=run_state.FINISHED, created_at=T0, updated_at=SEALED,
        attempts=[{"started_at": PIPELINE[0], "finished_at": PIPELINE[1], "rows_to_run": 2}], counts={"rows_in": 2},
    )
    run.child(run_state.MANIFEST).write_text(manifest.to_json())  # not run_state.save: it stamps now
    app.save_config(config, run)
    summary = {"status": "finished", "metrics": {"rows": 2, "wall_s": PIPELINE[1] - PIPELINE[0]}, "prompt_columns": ["article"]}
    run.child(run_state.METRICS).write_text(json.dumps(summary))
    results = tmp_path / "outputs" / "runs" / "job" / "results"
    results.mkdir()
    rows = [{"id": str(i), "article": "a", "generated_text": "g", "num_input_tokens": 3, "num_generated_tokens": 2} for i in range(2)]
    pq.write_table(pa.Table.from_pylist(rows), results / "part-0.parquet")
    if csv_text is not None:
        run.child(tracking.SYSTEM_CSV).write_text(csv_text)
    return run


def log(tmp_path, run):
    run_id = tracking.log_run_folder(run, tmp_path / "outputs")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    return MlflowClient().get_run(run_id)


def epoch_csv(times):
    rows = ["timestamp,time_s,system/cpu_utilization_percentage,system/system_memory_usage_megabytes,driver_rss_megabytes,"
            "system/gpu_utilization_percentage,system/gpu_memory_usage_megabytes"]
    rows += [f"{t},{t - PIPELINE[0]},{10 + i},{1000},{200},," for i, t in enumerate(times)]
    return "\n".join(rows) + "\n"


def test_the_experiment_opens_on_the_runs_table(tmp_path):
    # Without a kind, MLflow 3's UI opens an experiment on the GenAI overview (traces: 0) and
    # files the runs under "Evaluation runs".
    logged = log(tmp_path, make_run_folder(tmp_path))
    experiment = MlflowClient().get_experiment(logged.info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND == "custom_model_development"


def test_an_existing_experiment_gets_a_kind_but_one_a_person_chose_is_kept(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    old = mlflow.create_experiment("old")
    chosen = mlflow.create_experiment("chosen", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    assert tracking.experiment_id(mlflow, "old", tmp_path) == old
    assert tracking.experiment_id(mlflow, "chosen", tmp_path) == chosen
    assert MlflowClient().get_experiment(old).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert MlflowClient().get_experiment(chosen).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"


def test_a_run_logged_after_the_fact_has_the_jobs_start_and_end(tmp_path):
    # Seen: a 60 s job showed "Duration 61ms", the time logging took.
    logged = log(tmp_path, make_run_folder(tmp_path))
    assert logged.info.status == "FINISHED"
    assert logged.info.start_time == int(T0 * 1000)
    assert logged.info.end_time == int(SEALED * 1000)
    assert PIPELINE[1] - PIPELINE[0] <= (logged.info.end_time - logged.info.start_time) / 1000 <= SEALED - T0


def test_system_metrics_are_on_the_jobs_clock_with_steps_in_order(tmp_path):
    times = [PIPELINE[0] + 1.0 + i for i in range(5)]
    logged = log(tmp_path, make_run_folder(tmp_path, epoch_csv(times)))
    history = MlflowClient().get_metric_history(logged.info.run_id, "system/cpu_utilization_percentage")
    history = sorted(history, key=lambda m: m.step)
    assert [m.step for m in history] == list(range(5))
    assert [m.timestamp for m in history] == [int(t * 1000) for t in times]
    assert all(logged.info.start_time <= m.timestamp <= logged.info.end_time for m in history)
    assert [m.value for m in history] == [10.0, 11.0, 12.0, 13.0, 14.0]
    # Empty GPU columns (no GPU) log nothing rather than zeros.
    assert not MlflowClient().get_metric_history(logged.info.run_id, "system/gpu_utilization_percentage")


def test_an_older_csv_with_elapsed_seconds_only_is_placed_from_the_pipelines_start(tmp_path):
    old_csv = "time_s,system/cpu_utilization_percentage\n1.0,50\n2.0,60\n3.0,70\n"
    logged = log(tmp_path, make_run_folder(tmp_path, old_csv))
    history = sorted(MlflowClient().get_metric_history(logged.info.run_id, "system/cpu_utilization_percentage"), key=lambda m: m.step)
    assert [m.timestamp for m in history] == [int((PIPELINE[0] + s) * 1000) for s in (1.0, 2.0, 3.0)]
    assert all(logged.info.start_time <= m.timestamp <= logged.info.end_time for m in history)


def test_the_monitor_records_epoch_time_in_order():
    before = time.time()
    with sysmon.SystemMonitor(interval_s=0.05) as monitor:
        time.sleep(0.4)
    after = time.time()
    stamps = [s["timestamp"] for s in monitor.samples]
    assert len(stamps) >= 3 and stamps == sorted(stamps)
    assert before <= stamps[0] and stamps[-1] <= after
    assert monitor.csv_text().splitlines()[0].startswith("timestamp,time_s,")


class LostGpu:
    """pynvml on a GPU that fell off the bus mid-run: every query raises."""

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetUtilizationRates(self, handle):
        raise self.NVMLError("GPU is lost")

    nvmlDeviceGetMemoryInfo = nvmlDeviceGetUtilizationRates


def test_an_nvml_error_is_logged_once_and_cpu_sampling_goes_on(caplog):
    # Seen: the first NVML error ended the sampling thread, and the run had no system metrics after it.
    monitor = sysmon.SystemMonitor(interval_s=0.05)
    monitor._nvml, monitor._gpus = LostGpu(), ["handle"]
    with caplog.at_level("WARNING", logger="runner.sysmon"), monitor:
        time.sleep(0.5)
    assert len(monitor.samples) >= 3
    assert all(s["system/cpu_utilization_percentage"] is not None and s["system/gpu_utilization_percentage"] is None for s in monitor.samples)
    warnings = [r.getMessage() for r in caplog.records if r.name == "runner.sysmon"]
    assert len(warnings) == 1 and "GPU is lost" in warnings[0]


def test_a_failed_job_is_logged_from_when_it_started(tmp_path):
    config = to_object(compose([f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]))
    started = time.time() - 42.0
    run_id = tracking.log_failed_run(config, tmp_path / "outputs", "RuntimeError: engine died", started_at=started)
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    assert run.info.status == "FAILED" and run.info.start_time == int(started * 1000)
    assert run.info.end_time - run.info.start_time >= 42_000


def test_links_to_the_ui_open_the_runs_table(tmp_path):
    # MLflow 3.17's UI picks GenAI or "Model training" by a per-browser switch before it reads
    # the experiment's kind; the link sets the switch.
    logged = log(tmp_path, make_run_folder(tmp_path))
    link = tracking.run_link(logged.info.run_id, f"sqlite:///{tmp_path}/mlflow.db")
    assert link == f"http://127.0.0.1:5000/#/experiments/{logged.info.experiment_id}/runs/{logged.info.run_id}?workflowType=machine_learning"
    assert tracking.ui_link("https://mlflow.internal/", "7") == "https://mlflow.internal/#/experiments/7?workflowType=machine_learning"
