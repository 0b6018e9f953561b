"""Bad input stops the run before Ray or vLLM start, with a message naming field and fix."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner import preflight
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[1]


def problems(*overrides):
    cfg = OmegaConf.to_container(compose_config(*overrides), resolve=True)
    with pytest.raises(preflight.PreflightError) as caught:
        preflight.run_checks(cfg)
    return caught.value.problems


def test_default_passes():
    preflight.run_checks(OmegaConf.to_container(compose_config(), resolve=True))


def test_gpu_profile_on_a_machine_without_gpus(monkeypatch):
    monkeypatch.setattr(preflight, "local_gpu_names", lambda: [])
    found = problems("hw=l4")
    assert any("hw=l4" in p and "GPU" in p and "hw=cpu" in p for p in found)


def hardware_problems(gpu_names, *overrides):
    cfg = OmegaConf.to_container(compose_config(*overrides), resolve=True)
    return preflight._local_gpu_problems(cfg["hw"], int(cfg["processor"]["concurrency"]), gpu_names)


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
    preflight.run_checks(OmegaConf.to_container(compose_config("dataset=jsonl", f"dataset.path={tmp_path}/d.jsonl"), resolve=True))


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
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "runner", "model=llama31_8b", "hw=l4", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "hw=l4 asks for 1 GPU" in output and "unsloth/Llama-3.1-8B-Instruct" in output
    assert "Traceback" not in output
    assert "Ray" not in output.replace("Ray cluster", "")  # no "Started a local Ray instance"
    assert not (tmp_path / "run" / "results").exists()
