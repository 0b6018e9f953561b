"""The benchmark (python -m runner.bench) on the CPU path: both sides, same prompts, real figures."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from runner import storage, tracking
from runner.bench import mlflow_run, vllm_log
from runner.bench.__main__ import main as bench_main
from runner.bench.figures import RATIO_KEYS, figures, ratios
from runner.bench.pipeline_side import engine_marks, read_results
from runner.bench.results import BenchResult, SideResult, SideRun, TokenCheck
from runner.pipeline import PipelineRun
from runner.config import compose, to_object

ROOT = Path(__file__).resolve().parents[1]
ROWS, MAX_TOKENS = 8, 16


def side_run(side, marks, rows=10, input_tokens=1000, output_tokens=200):
    return SideRun(side=side, marks=marks, engine_kwargs={}, rows=rows, input_tokens=input_tokens, output_tokens=output_tokens, input_tokens_by_id={})


def test_figures_and_ratios_from_marks():
    marks = {"child_start": 101.0, "imported": 103.0, "first_request_in": 110.0, "last_output_out": 120.0, "results_written": 121.0}
    plain = figures(side_run("plain", marks), spawned=100.0, exited=125.0)
    assert plain.ready_s == 10.0 and plain.generation_s == 10.0 and plain.e2e_s == 25.0
    assert plain.req_per_s == 1.0 and plain.output_tokens_per_s == 20.0 and plain.total_tokens_per_s == 120.0
    assert list(plain.timeline_s) == ["child_start", "imported", "first_request_in", "last_output_out", "results_written"]
    # The pipeline: 5% fewer output tokens in the same generation time, and 5 s more to exit.
    ours = figures(side_run("pipeline", marks, output_tokens=190), spawned=100.0, exited=130.0)
    results = {"plain": SideResult("plain", side_run("plain", marks), plain), "pipeline": SideResult("pipeline", side_run("pipeline", marks), ours)}
    ratio = ratios(results)
    assert ratio["output_tokens_per_s"] == pytest.approx(0.95) and ratio["e2e_s"] == pytest.approx(1.2)
    assert set(ratio) == set(RATIO_KEYS)
    assert ratios({"pipeline": results["pipeline"]}) == {}  # one side: nothing to compare


def test_start_up_durations_are_read_from_vllm_logs():
    log = "\n".join(
        [
            "(EngineCore pid=1) INFO 11-27 09:14:30 [core.py:133] Initializing a V1 LLM engine (v0.26.0) with config: x",
            "(Worker pid=2) INFO 11-27 09:14:40 [default_loader.py:501] Loading weights took 0.86 seconds",
            "(EngineCore pid=1) INFO 11-27 09:14:41 [backends.py:1] torch.compile takes 23.10 s in total",
            "(EngineCore pid=1) INFO 11-27 09:14:49 [core.py:402] init engine (profile, create kv cache, warmup model) took 6.89 s",
        ]
    )
    from datetime import datetime

    spawned = datetime(datetime.now().year, 11, 27, 9, 14, 0).timestamp()
    found = vllm_log.log_figures(log, spawned)
    assert found["weights_load_s"] == 0.86 and found["compile_s"] == 23.1 and found["engine_init_s"] == 6.89
    assert found["at_engine_core_start_s"] == 30.0 and found["at_engine_init_done_s"] == 49.0


def test_the_pipelines_last_output_is_its_rows_end_not_a_rewritten_files_mtime(tmp_path):
    # Seen: accounting rewrote a results file holding failed rows after the pipeline ended, and
    # that file's mtime became "last output", lengthening generation_s by the settling time.
    results = tmp_path / "run" / "results"
    results.mkdir(parents=True)
    rows = [{"id": str(i), "latency_s": 2.0, "finished_at": 110.0 + 10 * i, "num_input_tokens": 5, "num_generated_tokens": 3} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), results / "part-0.parquet")
    os.utime(results / "part-0.parquet", (200.0, 200.0))  # rewritten by accounting, long after
    location = storage.resolve(str(results))
    reported = PipelineRun(results_dir=location, started_at=100.0, finished_at=131.0, marks={"ray_started": 101.5})
    table = read_results(location, "id")
    assert table["id"] == ["0", "1", "2"]
    marks = engine_marks(table, reported)
    assert marks["first_request_in"] == 108.0 and marks["last_output_out"] == 130.0
    assert marks["ray_start"] == 100.0 and marks["results_written"] == 131.0


def test_the_bench_logs_redacted_params_over_its_own_span(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_" + "S" * 34)
    config = to_object(compose([f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "+engine.extra.api_key=sk-planted-secret-1234", "model.tokenizer=hf_" + "S" * 34]))
    run_dir = tmp_path / "bench"
    (run_dir / "plain").mkdir(parents=True)
    (run_dir / "bench.json").write_text("{}")
    (run_dir / "plain" / "log.txt").write_text("vLLM's log")
    started = time.time() - 120.0
    marks = {"imported": started + 2, "first_request_in": started + 10, "last_output_out": started + 20, "results_written": started + 21}
    plain = SideResult("plain", side_run("plain", marks, rows=8), figures(side_run("plain", marks, rows=8), started, started + 100), {"compile_s": 3.5})
    result = BenchResult(
        command="python -m runner.bench", started_at=started, overrides=[], device="CPU", cache="cold", model="m", hw="cpu", prep={},
        results={"plain": plain}, ratios={}, tokens=TokenCheck(0, None, False), run_dir=str(run_dir),
    )
    run_id = mlflow_run.log(result, config, tmp_path)
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    assert run.data.metrics["plain.rows"] == 8 and run.data.metrics["plain.e2e_s"] == pytest.approx(100.0)
    assert run.data.metrics["plain.log.compile_s"] == 3.5 and run.data.tags["runner.kind"] == "bench"
    assert run.data.params["bench.sides"] == "plain" and run.info.status == "FINISHED"
    artifacts = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(run_id)
    assert {"bench.json", "plain"} <= {a.path for a in artifacts}
    logged = " ".join(f"{k}={v}" for k, v in run.data.params.items())
    assert "sk-planted-secret-1234" not in logged and "S" * 34 not in logged and "engine.extra.api_key" not in logged
    assert run.data.params["model.tokenizer"] == "***"
    assert run.info.start_time == int(started * 1000) and run.info.end_time >= run.info.start_time + 120_000
    experiment = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_experiment(run.info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND


@pytest.mark.parametrize(
    "override,named",
    [("engine.max_num_seq=8", "max_num_seq"), ("+engine.max_num_seq=8", "max_num_seq"), ("hw=tpu_v9", "tpu_v9"), ("prompt.max_tokens=lots", "max_tokens")],
)
def test_a_config_typo_is_one_clear_error_and_exit_code_2(override, named, caplog):
    with caplog.at_level("ERROR", logger="runner.bench"):
        assert bench_main([override]) == 2
    assert named in caplog.text and "Traceback" not in caplog.text


@pytest.mark.slow
def test_bench_runs_plain_vllm_and_the_pipeline_on_the_same_prompts(tmp_path):
    out, json_path = tmp_path / "bench", tmp_path / "result.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable, "-m", "runner.bench", "--out", str(out), "--json", str(json_path), "--no-prewarm",
            "dataset=synthetic", "prompt=raw", f"dataset.num_rows={ROWS}", "dataset.input_tokens=32",
            f"prompt.max_tokens={MAX_TOKENS}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    summary = json.loads(json_path.read_text())
    assert json.loads((out / "bench.json").read_text())["results"].keys() == {"plain", "pipeline"}
    for side in ("plain", "pipeline"):
        result = summary["results"][side]
        assert "error" not in result, result
        assert result["rows"] == ROWS and result["output_tokens"] == ROWS * MAX_TOKENS  # ignore_eos: exact
        for key in ("ready_s", "generation_s", "e2e_s", "req_per_s", "total_tokens_per_s", "output_tokens_per_s"):
            assert result[key] > 0, (side, key)
        assert result["ready_s"] + result["generation_s"] <= result["e2e_s"] + 1.0
        assert result["input_tokens"] >= ROWS * 32
    # The same prompts reach both engines: the same input token count, row by row.
    assert summary["tokens"]["rows_matched"] == ROWS
    assert summary["tokens"]["max_abs_input_token_diff"] <= 1
    assert set(summary["ratios"]) == set(RATIO_KEYS)
    assert "| output tokens/s (generation) |" in summary["table"]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["runner"], filter_string="tags.`runner.kind` = 'bench'")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["metrics.plain.output_tokens"] == row["metrics.pipeline.output_tokens"] == ROWS * MAX_TOKENS
    assert row["metrics.ratio.output_tokens_per_s"] > 0


def test_a_sweep_compares_each_case_with_the_first_and_keeps_going_past_a_failure(tmp_path, monkeypatch, capsys):
    from runner.bench import sweep

    rates = {"16": 100.0, "64": 130.0}

    def one_case(overrides, sides, out, json_path, cache, timeout_s, prewarm):
        batch = overrides[-1].split("=")[1]
        if batch not in rates:
            raise ValueError(f"no engine for batch {batch}")
        marks = {"imported": 1.0, "first_request_in": 10.0, "last_output_out": 20.0, "results_written": 21.0}
        run = side_run("pipeline", marks, output_tokens=int(rates[batch] * 10))
        side = SideResult("pipeline", run, figures(run, 0.0, 25.0))
        return BenchResult("", 0.0, list(overrides), "CPU", cache, "m", "cpu", {}, {"pipeline": side}, {}, TokenCheck(0, None, False), str(out))

    monkeypatch.setattr(sweep, "run_bench", one_case)
    argv = ["--out", str(tmp_path / "s"), "--case", "ref: processor.batch_size=16", "--case", "bad: processor.batch_size=7",
            "--case", "big: processor.batch_size=64", "dataset=synthetic"]
    assert sweep.main(argv) == 1  # one case failed
    saved = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert [c["name"] for c in saved["cases"]] == ["ref", "bad", "big"]
    assert saved["cases"][0]["vs_first"] == 1.0 and saved["cases"][2]["vs_first"] == pytest.approx(1.3)
    assert "no engine for batch 7" in saved["cases"][1]["error"] and "summary" not in saved["cases"][1]
    assert saved["cases"][2]["summary"]["overrides"] == ["dataset=synthetic", "processor.batch_size=64"]
    rows = saved["table"].splitlines()
    assert rows[2].startswith("| ref | processor.batch_size=16 | 100 |") and rows[4].endswith("| 1.30x |")
    with pytest.raises(SystemExit):
        sweep.main(["--out", str(tmp_path / "t"), "--case", "no colon"])
    assert "write it as 'name: key=value key=value'" in capsys.readouterr().err
