"""The default job, for real: Hydra -> embedded SmolLM2 -> Ray Data LLM on vLLM (CPU) -> files + MLflow."""

import json
import re

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from runner import embedded_model
from tests.e2e_helpers import SAMPLE_NEWS, content_words, grep_tree, ray_sessions, read_results, run_cli

PLANTED = "hf_PlantedTokenForTheTest0123456789abcd"
PLANTED_AWS = "wJalrXUtnFEMIK7MDENGbPxRfiCYPLANTED42"


@pytest.fixture(scope="module")
def ray_sessions_before():
    return ray_sessions()


@pytest.fixture(scope="module")
def default_job(tmp_path_factory, ray_sessions_before):
    cwd = tmp_path_factory.mktemp("default_job")
    secrets = {"HF_TOKEN": PLANTED, "MY_API_KEY": "plainSecretValue42", "AWS_SECRET_ACCESS_KEY": PLANTED_AWS}
    done = run_cli(cwd, "hydra.run.dir=outputs/runs/e2e", env=secrets)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return cwd, done


@pytest.mark.slow
def test_every_input_row_comes_back_once_with_a_summary(default_job):
    cwd, _ = default_job
    inputs = [json.loads(line) for line in SAMPLE_NEWS.read_text().splitlines() if line.strip()]
    rows = read_results(cwd / "outputs/runs/e2e/results")
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in inputs)
    by_id = {r["id"]: r for r in inputs}
    for row in rows:
        assert row["article"] == by_id[row["id"]]["article"] and row["title"] == by_id[row["id"]]["title"]
        assert row["generated_text"].strip()
        assert row["num_input_tokens"] > 50 and 0 < row["num_generated_tokens"] <= 150
    # A 135M model: most summaries reuse the article's words; a few are generic.
    overlaps = sorted(
        len(content_words(r["generated_text"]) & content_words(r["article"])) / max(1, len(content_words(r["generated_text"])))
        for r in rows
    )
    assert overlaps[len(overlaps) // 2] >= 0.5
    assert sum(o >= 0.3 for o in overlaps) >= 0.75 * len(overlaps)


@pytest.mark.slow
def test_run_folder_holds_config_and_metrics(default_job):
    cwd, _ = default_job
    run_dir = cwd / "outputs/runs/e2e"
    summary = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    assert summary["rows"] == 32
    assert 0 < summary["startup_s"] < summary["wall_s"] and 0 < summary["generation_s"] < summary["wall_s"]
    assert summary["steady_output_tokens_per_s"] > summary["output_tokens_per_s"] > 0
    saved = (run_dir / "config.yaml").read_text()
    assert "model:" in saved and "  format: parquet\n" in saved and "  on_row_error: continue\n" in saved


@pytest.mark.slow
def test_mlflow_run_holds_params_metrics_artifacts_and_samples(default_job):
    cwd, _ = default_job
    mlflow.set_tracking_uri(f"sqlite:///{cwd}/outputs/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["runner"])
    assert len(runs) == 1
    run = runs.iloc[0]
    for metric in ["rows", "wall_s", "rows_per_s", "input_tokens_per_s", "output_tokens_per_s", "total_tokens_per_s"]:
        assert run[f"metrics.{metric}"] > 0, metric
    assert run["metrics.rows"] == 32
    assert run["params.model.name"] == "smollm2_135m" and run["params.prompt.temperature"] == "0.3"
    # Settings with fixed choices are Enums in the config; what is logged is their plain string.
    assert run["params.output.format"] == "parquet" and run["params.model.source"] == "embedded"
    client = MlflowClient()
    names = {a.path for a in client.list_artifacts(run.run_id)}
    assert {"config.yaml", "metrics.json", "results", "samples.json"} <= names
    assert client.list_artifacts(run.run_id, "results")
    samples = json.loads(open(client.download_artifacts(run.run_id, "samples.json")).read())
    assert {"id", "article", "generated_text", "num_input_tokens", "num_generated_tokens"} <= set(samples["columns"])
    assert len(samples["data"]) == 8


@pytest.mark.slow
def test_secrets_reach_no_file_log_or_store(default_job, ray_sessions_before):
    cwd, done = default_job
    # Ray's own logs too: it wrote runtime_env's variables, HF_TOKEN included, to runtime_env_agent.log.
    sessions = ray_sessions() - ray_sessions_before
    assert sessions, "the run left no Ray session folder to check"
    for secret in (PLANTED, "plainSecretValue42", PLANTED_AWS):
        assert grep_tree(cwd / "outputs", secret) == []
        for session in sessions:
            assert grep_tree(session, secret) == [], session
        assert secret not in done.stdout and secret not in done.stderr


@pytest.mark.slow
def test_the_embedded_model_is_converted_once(default_job):
    folder = embedded_model.converted_dir("smollm2-135m-instruct")
    weights = folder / "model.safetensors"
    before = weights.stat().st_mtime_ns
    assert embedded_model.ensure_converted("smollm2-135m-instruct") == folder
    assert weights.stat().st_mtime_ns == before


@pytest.mark.slow
def test_ray_and_vllm_output_goes_to_the_run_log_not_the_terminal(default_job):
    cwd, done = default_job
    terminal, log = done.stdout + done.stderr, (cwd / "outputs/runs/e2e/__main__.log").read_text()
    # The engine actor's output (vLLM's start-up and shutdown), Ray's and Ray Data's own messages.
    for chatter in ("Initializing a V1 LLM engine", "(MapWorker(", "Started a local Ray instance",
                    "Execution plan of Dataset", "Creating initial MLflow database tables"):
        assert chatter not in terminal and chatter in log, chatter
    # No INFO line but the runner's ("[runner.app][INFO] - ..."): vLLM's "INFO 11-28 ...", Ray's "\tINFO worker.py:...".
    assert not [line for line in terminal.splitlines() if re.search(r"(^|\s)INFO\s", line)], terminal[-3000:]
    # The runner's own lines stay, in its format, and the summary names the log.
    assert "[runner.app][INFO] - run state at" in done.stdout and "[runner.app][INFO] - run state at" in log
    assert f"  log         {cwd / 'outputs/runs/e2e/__main__.log'}" in done.stdout
