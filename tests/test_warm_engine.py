"""The shared engine's bookkeeping, without Ray: which jobs may share an engine, what is
deployed, and how the engine's answers become result rows. The real sweeps are in
test_sweep.py (sharing), test_tasks.py (structured outputs through it) and
test_shared_engine.py (a second engine, Ctrl-C)."""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from runner import engine_server, pipeline, tracking, warm_engine
from runner.models import ModelLocation
from runner.config import CONF_DIR, compose, to_object

LOCATION = ModelLocation(source="/models/smollm2", load_format=None)


def config(*overrides):
    return to_object(compose(list(overrides)))


def spec(*overrides):
    cfg = config(*overrides)
    return warm_engine.spec(cfg, LOCATION, pipeline.worker_env(cfg), pipeline.engine_kwargs(cfg, LOCATION))


def test_jobs_that_change_only_how_rows_are_sent_share_an_engine():
    base = spec().key
    for overrides in (["processor.batch_size=4"], ["prompt=extract"], ["prompt.temperature=0.9"], ["dataset.limit=3"], ["tracking=off"]):
        assert spec(*overrides).key == base, overrides


def test_any_engine_model_or_hardware_setting_gets_its_own_engine():
    base = spec().key
    for overrides in (["engine.max_num_seqs=8"], ["engine.seed=1"], ["+engine.extra.swap_space=2"], ["processor.concurrency=2"],
                      ["hw.cpus_per_replica=2"], ["hw.env.VLLM_CPU_KVCACHE_SPACE=3"], ["model.revision=abc"]):
        assert spec(*overrides).key != base, overrides
    other_model = ModelLocation(source="/models/other", load_format=None)
    cfg = config()
    assert warm_engine.spec(cfg, other_model, {}, pipeline.engine_kwargs(cfg, other_model)).key != spec().key


def test_cpu_engine_is_placed_on_the_replica_cpus_with_no_accelerator_type():
    cpu = spec()
    assert cpu.bundles == [{"CPU": 1.0}] and cpu.replicas == 1
    assert cpu.llm_config["accelerator_config"] == {"kind": "cpu"} and "accelerator_type" not in cpu.llm_config
    assert cpu.llm_config["engine_kwargs"]["max_num_seqs"] == 32
    assert cpu.llm_config["runtime_env"] == {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "2"}}


def test_gpu_engine_reserves_a_gpu_per_shard_on_the_named_accelerator():
    gpu = spec("model=llama31_8b", "hw=h100x2")
    assert gpu.bundles == [{"GPU": 1.0, "CPU": 1.0, "accelerator_type:H100": 0.001}] * 2
    assert gpu.llm_config["accelerator_type"] == "H100" and "accelerator_config" not in gpu.llm_config


def test_shared_in_a_sweep_or_where_asked_and_never_on_a_cluster_the_run_joined(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    several = config("processor.concurrency=2")
    try:
        assert not warm_engine.wanted(several)
        warm_engine.keep_between_jobs(True)  # what a sweep sets
        assert warm_engine.wanted(several)
        assert not warm_engine.wanted(config("processor.shared_engine=false"))
        assert not warm_engine.wanted(config("ray.address=auto"))
    finally:
        warm_engine.keep_between_jobs(False)
    assert warm_engine.wanted(config("processor.shared_engine=true", "processor.concurrency=2"))


def test_a_single_job_on_one_device_shares_where_it_was_faster_and_ray_serve_is_there(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert warm_engine.wanted(config())  # the CPU default
    assert warm_engine.wanted(config("hw=h100"))  # one GPU
    assert not warm_engine.wanted(config("hw=h100", "hw.gpus_per_replica=2"))  # tensor parallel
    assert not warm_engine.wanted(config("hw=h100x8"))  # eight replicas
    # Small batches and small blocks fill it too (runner.batches_in_flight), unless the job
    # bounds its blocks in flight below the engine's 32 sequences.
    assert warm_engine.wanted(config("processor.batch_size=1"))
    assert warm_engine.wanted(config("processor.batch_size=8", "processor.rows_per_file=16"))
    assert not warm_engine.wanted(config("processor.batch_size=8", "processor.rows_per_file=16", "processor.max_concurrent_batches=1"))
    assert not warm_engine.wanted(config("hw=l4"))  # batch 16 against vLLM's own number of sequences
    monkeypatch.setattr(warm_engine, "_serve_import_error", lambda: ImportError("No module named 'grpc_reflection'"))
    assert not warm_engine.wanted(config())


def test_a_model_folder_in_object_storage_is_not_given_to_an_engine_that_cannot_fetch_it(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    in_s3 = ("model.source=local", "model.path=s3://models/llama")
    monkeypatch.setenv(warm_engine.SERVER_ENV, warm_engine.SERVE_LLM)  # Ray Serve LLM's server fetches it
    assert warm_engine.wanted(config(*in_s3)) and warm_engine.problems(config(*in_s3)) == []
    monkeypatch.setenv(warm_engine.SERVER_ENV, warm_engine.DIRECT)  # vLLM started by the replica does not
    assert not warm_engine.wanted(config(*in_s3))  # a single job keeps its own engine, which fetches it
    assert warm_engine.wanted(config("model.source=local", "model.path=/models/llama"))
    refused = warm_engine.problems(config(*in_s3, "processor.shared_engine=true"))
    assert len(refused) == 1 and refused[0].startswith("model.path=s3://models/llama: the shared engine here is vLLM started by its replica")
    assert "Fix: processor.shared_engine=false" in refused[0]


def test_driver_defines_the_engine_without_importing_vllm():
    probe = "import sys; from runner import pipeline, warm_engine, sweep; assert 'vllm' not in sys.modules and 'torch' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=CONF_DIR.parent)
    assert done.stdout.strip() == "ok", done.stderr[-3000:]


def serve_row(row, *overrides):
    cfg = config(*overrides)
    return pipeline._serve_request(row, prompt_cfg=cfg.prompt, columns={"article": "article"}, id_column="id", fail_fast=False)


def test_a_row_reaches_the_engine_as_one_plain_request_and_keeps_its_columns():
    out = serve_row({"id": "news-001", "article": "Some text."})
    assert out["id"] == "news-001" and out["article"] == "Some text."
    assert out["method"] == engine_server.METHOD
    body = out["request_kwargs"]
    assert set(body) == {"messages", "sampling_params"} and "Some text." in body["messages"][-1]["content"]
    assert "messages" not in out and "sampling_params" not in out


def test_a_row_that_cannot_become_a_prompt_still_travels_and_stays_failed():
    out = serve_row({"id": "bad", "article": None})
    assert "article" in out[pipeline.ROW_ERROR] and out["request_kwargs"]["sampling_params"]["max_tokens"] == 1


def engine_answer(**kwargs):
    # What the Serve stage hands on: the row, the answer merged in, its own bookkeeping.
    return {"id": "r1", "article": "x", **engine_server.answer(**kwargs), "request_id": "7", "__inference_error__": ""}


def postprocess(row, fail_fast=False):
    from runner import outputs

    cfg = config()
    return pipeline._postprocess(row, ["id", "article"], outputs.from_config(cfg), "id", fail_fast)


def test_an_answer_becomes_a_result_row_timed_by_the_engine_clock():
    stamps = {"arrival_time": 1000.0, "queued_ts": 50.0, "last_token_ts": 52.5, "first_token_latency": 0.25}
    out = postprocess(engine_answer(text="A summary.", input_tokens=40, output_tokens=3, metrics=stamps, seconds=9.0))
    assert out["id"] == "r1" and out["generated_text"] == "A summary." and out["error"] == ""
    assert (out["num_input_tokens"], out["num_generated_tokens"], out["latency_s"], out["finished_at"]) == (40, 3, 2.5, 1002.5)


def test_a_request_the_engine_refused_is_a_failed_row_or_stops_a_fail_fast_run():
    refused = engine_answer(error="VLLMValidationError: This model's maximum context length is 4096 tokens.")
    out = postprocess(refused)
    assert "maximum context length" in out["error"] and out["num_generated_tokens"] == 0
    with pytest.raises(ValueError, match="id='r1'.*maximum context length.*on_row_error=continue"):
        postprocess(refused, fail_fast=True)


def test_every_answer_has_the_same_fields_and_types():
    ok = engine_server.answer(text="t", input_tokens=1, output_tokens=1, metrics=dict.fromkeys(engine_server.METRIC_FIELDS, 1), seconds=1.0)
    refused = engine_server.answer(error="no")
    assert list(ok) == list(refused)
    assert ok["metrics"] and refused["metrics"] is None


def test_requests_from_ray_data_batches_are_made_plain_for_vllm():
    batch_row = {"messages": np.array([{"role": "user", "content": "x"}], dtype=object),
                 "sampling_params": {"seed": np.int64(2), "structured_outputs": {"choice": np.array(["a", "b"])}}}
    plain = engine_server._plain(batch_row)
    assert plain == {"messages": [{"role": "user", "content": "x"}], "sampling_params": {"seed": 2, "structured_outputs": {"choice": ["a", "b"]}}}
    assert type(plain["sampling_params"]["seed"]) is int


def test_the_replica_refuses_to_run_where_ray_serve_llm_would_place_it_otherwise():
    engine_server._check_placement({"placement_group_bundles": [{"CPU": 1, "GPU": 0}]}, [{"CPU": 1.0}])
    with pytest.raises(RuntimeError, match="placement mismatch"):
        engine_server._check_placement({"placement_group_bundles": [{"CPU": 2, "GPU": 0}]}, [{"CPU": 1.0}])


def test_mlflow_is_told_which_engine_ran_each_job():
    assert tracking.engine_tags({"id": "ab12-cd", "mode": "shared", "started": False}) == {
        "runner.engine": "ab12-cd", "runner.engine_started": "false", "runner.engine_mode": "shared",
    }
    assert tracking.engine_tags(None) == {}


SERVE_REPLICA_FAILURE = """The deployment failed to start 3 times in a row. See controller logs for details. Error:
ray::ServeReplica:runner-engine-b7a0af67-b6bd:engine.initialize_and_get_metadata() (pid=25330)
  File "/site-packages/ray/serve/_private/replica.py", line 3521, in initialize_and_get_metadata
RuntimeError: Traceback (most recent call last):
  File "/site-packages/ray/llm/_internal/serve/engines/vllm/vllm_models.py", line 229, in from_llm_config
    raise ValueError(f"Unknown engine argument: {key}")
ValueError: Unknown engine argument: no_such_engine_arg
"""


def test_an_engine_that_failed_to_start_is_reported_by_its_reason_not_its_traceback():
    # Serve's own words for a replica whose constructor raised (seen with +engine.extra.no_such_engine_arg=1).
    status = SimpleNamespace(message="Failed to update the deployments ['engine'].", status="DEPLOY_FAILED",
                             deployments={"engine": SimpleNamespace(message=SERVE_REPLICA_FAILURE)})
    assert warm_engine._status_text(status) == (
        "Failed to update the deployments ['engine'].; engine: The deployment failed to start 3 times in a row. "
        "See controller logs for details. Error: ValueError: Unknown engine argument: no_such_engine_arg "
        "(the traceback is in the run's log)"
    )
    status.deployments["engine"].message = "Deploying: 0 of 1 replica(s) running"
    assert warm_engine._status_text(status).endswith("engine: Deploying: 0 of 1 replica(s) running")


MISSING_SERVE_PROBE = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):  # what a machine without ray[serve]'s extras has
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "grpc_reflection":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Refuse())
from runner import preflight
from runner.config import compose, to_object
config = to_object(compose(sys.argv[2:]))
try:
    preflight.run_checks(config)
    print("passed")
except preflight.PreflightError as error:
    print(error)
"""


@pytest.mark.parametrize("shared", ["true", "false", "null"])
def test_a_missing_ray_serve_is_named_before_the_run_with_its_fix(shared):
    done = subprocess.run([sys.executable, "-c", MISSING_SERVE_PROBE, str(CONF_DIR), f"processor.shared_engine={shared}"],
                          capture_output=True, text=True, timeout=120, cwd=CONF_DIR.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    if shared in ("false", "null"):  # null: a single job without Ray Serve runs its own engine
        assert done.stdout.strip().endswith("passed")
    else:
        assert "needs Ray Serve" in done.stdout and "grpc_reflection" in done.stdout and "pip install 'ray[serve]==2.60.*'" in done.stdout


def test_a_vllm_that_ray_serve_llm_cannot_import_is_found_without_importing_it(tmp_path, monkeypatch):
    """vLLM 0.26 (the GPU machines') lacks what Ray Serve LLM 2.60 imports: there the
    replica starts vLLM itself, and sweeps and processor.shared_engine=true use it."""
    old = tmp_path / "vllm-0.26"
    new = tmp_path / "vllm-0.32"
    (new / "entrypoints/serve/engine").mkdir(parents=True)
    (new / "entrypoints/serve/engine/protocol.py").write_text("")
    (old / "entrypoints").mkdir(parents=True)
    assert warm_engine.serve_llm_fits_vllm(str(new)) and not warm_engine.serve_llm_fits_vllm(str(old))
    assert warm_engine.serve_llm_fits_vllm()  # the vLLM installed here (vllm-cpu 0.32) has it
    monkeypatch.delenv(warm_engine.SERVER_ENV, raising=False)
    assert warm_engine.server_kind() == warm_engine.SERVE_LLM

    monkeypatch.setattr(warm_engine, "serve_llm_fits_vllm", lambda vllm_dir=None: False)
    monkeypatch.setattr(warm_engine, "_kept_between_jobs", True)
    assert warm_engine.server_kind() == warm_engine.DIRECT
    for setting in ("null", "true"):
        cfg = config(f"processor.shared_engine={setting}")
        assert warm_engine.wanted(cfg) and warm_engine.problems(cfg) == []
    monkeypatch.setenv(warm_engine.SERVER_ENV, "serve_llm")
    assert warm_engine.server_kind() == warm_engine.SERVE_LLM
    monkeypatch.setenv(warm_engine.SERVER_ENV, "llmserver")
    (problem,) = warm_engine.problems(config("processor.shared_engine=true"))
    assert "RUNNER_ENGINE_SERVER='llmserver'" in problem


FAKE_VLLM_PROBE = """
import sys
from runner import warm_engine
print(warm_engine.server_kind(), 'vllm' in sys.modules, warm_engine.__file__)
"""


def test_the_driver_picks_the_replica_from_the_installed_vllm_files_alone(tmp_path):
    """A vLLM 0.26 look-alike first on the path: its files say which replica runs it, and
    the driver imports none of it (its __init__ would fail the probe)."""
    fake = tmp_path / "site" / "vllm"
    (fake / "entrypoints").mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('the driver imported vLLM')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(CONF_DIR.parent)])}
    env.pop(warm_engine.SERVER_ENV, None)
    done = subprocess.run([sys.executable, "-c", FAKE_VLLM_PROBE], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert done.stdout.split()[:2] == ["direct", "False"], done.stderr[-3000:]


def test_the_replica_that_starts_vllm_itself_holds_the_devices_itself(monkeypatch):
    monkeypatch.setenv(warm_engine.SERVER_ENV, "direct")
    gpu = spec("model=llama31_8b", "hw=h100x2")
    assert gpu.server == warm_engine.DIRECT and gpu.bundles is None and gpu.llm_config is None
    assert gpu.actor_resources == {"num_cpus": 2.0, "num_gpus": 2.0, "accelerator_type": "H100"}
    assert gpu.engine_kwargs["tensor_parallel_size"] == 2 and gpu.model_source == LOCATION.source
    cpu = spec()
    assert cpu.actor_resources == {"num_cpus": 1.0, "num_gpus": 0.0}
    # The same job on the other replica is another engine.
    monkeypatch.setenv(warm_engine.SERVER_ENV, "serve_llm")
    assert spec().key != cpu.key and spec().actor_resources == {"num_cpus": 0}
