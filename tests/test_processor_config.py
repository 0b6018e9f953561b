"""What the hw profiles hand to Ray Data LLM: replicas, GPUs per replica, parallelism."""

import pytest

from runner import pipeline
from runner.models import ModelLocation
from runner.config import compose, to_object

LOCATION = ModelLocation(source="/models/llama31_8b-dummy", load_format="dummy")


def processor_config(*overrides):
    config = to_object(compose(["model=llama31_8b", *overrides]))
    return pipeline.processor_config(config, LOCATION, {})


@pytest.mark.parametrize("overrides, replicas", [(("hw=h100x8",), 8), (("hw=h100", "processor.concurrency=2"), 2), (("hw=cpu",), 1)])
def test_every_replica_asked_for_starts_with_the_job(overrides, replicas):
    # Ray Data LLM turns a bare int into an autoscaling pool from 1 replica; on two H200s
    # the second replica never started.
    assert processor_config(*overrides).get_concurrency() == {"min_size": replicas, "max_size": replicas}


def test_tensor_parallel_profile_reserves_one_gpu_per_shard():
    config = processor_config("hw=h100x2")
    assert config.engine_kwargs["tensor_parallel_size"] == 2
    assert config.engine_kwargs["load_format"] == "dummy"
    assert config.placement_group_config["bundles"] == [{"GPU": 1, "CPU": 1}] * 2
    assert config.accelerator_type == "H100"


def test_quantization_reaches_the_engine_only_when_set():
    assert "quantization" not in processor_config("hw=h100").engine_kwargs
    assert processor_config("hw=h100", "engine.quantization=fp8").engine_kwargs["quantization"] == "fp8"
