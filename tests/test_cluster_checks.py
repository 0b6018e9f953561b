"""Joining a Ray cluster, without one: which address is joined, what is refused before the
run, how the runtime_env meets a job's, and what a cluster's nodes must hold (runner.cluster).

The real two-node cluster is tests/test_cluster.py."""

import json

import pytest

from runner import cluster, preflight, storage
from runner.config import compose, to_object
from runner.schema import RayConfig


def config(*overrides):
    return to_object(compose(overrides))


def node(cpus=4.0, gpus=0.0, kind=None, node_id="n1"):
    resources = {"CPU": cpus, "memory": 1e9}
    if gpus:
        resources["GPU"] = gpus
    if kind:
        resources[f"accelerator_type:{kind}"] = 1.0
    return {"NodeID": node_id * 8, "NodeManagerAddress": "10.0.0.1", "Alive": True, "Resources": resources}


def joined(*nodes):
    return cluster.Cluster(address="10.0.0.1:6379", nodes=list(nodes), driver_node=nodes[0]["NodeID"])


def test_which_cluster_is_joined():
    assert cluster.target(RayConfig(address=None), {}) is None
    # `ray job submit` and KubeRay pods set RAY_ADDRESS: a bare one is joined.
    assert cluster.target(RayConfig(address=None), {"RAY_ADDRESS": "10.0.0.1:6379"}) == "10.0.0.1:6379"
    assert cluster.target(RayConfig(address="auto"), {"RAY_ADDRESS": "10.0.0.1:6379"}) == "auto"
    # "local" starts a Ray of the run's own, whatever the environment says.
    assert cluster.target(RayConfig(address="local"), {"RAY_ADDRESS": "10.0.0.1:6379"}) is None


def test_ray_client_addresses_are_refused_before_the_run_with_the_job_command(monkeypatch):
    problems = cluster.address_problems(config("ray.address=ray://head:10001"), {})
    assert len(problems) == 1 and "ray.address=ray://head:10001" in problems[0] and "ray job submit" in problems[0]
    from_env = cluster.address_problems(config(), {"RAY_ADDRESS": "ray://head:10001"})
    assert "RAY_ADDRESS=ray://head:10001 (in the environment)" in from_env[0]
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(preflight.PreflightError) as refused:
        preflight.run_checks(config())
    assert "ray job submit" in str(refused.value)


def test_local_gpu_checks_are_left_to_the_cluster_a_run_joins(monkeypatch):
    monkeypatch.setattr(preflight, "local_gpu_names", lambda: [])
    assert any("this machine has 0" in p for p in preflight.check_hardware(config("hw=l4")))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert preflight.check_hardware(config("hw=l4")) == []


def test_runtime_env_merges_with_a_jobs_own():
    env = {"VLLM_CPU_KVCACHE_SPACE": "2", "OMP_NUM_THREADS": "1"}
    alone = cluster.driver_runtime_env(env, {})
    assert alone["env_vars"] == env and alone["py_modules"] == [str(cluster.RUNNER_DIR)]
    # A job's env vars win (Ray refuses one key set twice), and a working_dir that holds the
    # runner package already carries the code to the workers.
    job = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}, "working_dir": "gcs://_ray_pkg_x.zip"}
    merged = cluster.driver_runtime_env(env, job, cwd=cluster.RUNNER_DIR.parent)
    assert merged == {"env_vars": {"OMP_NUM_THREADS": "1"}, "worker_process_setup_hook": "runner.worker_setup.run"}
    # A working_dir elsewhere does not hold it: the package still goes as py_modules.
    assert "py_modules" in cluster.driver_runtime_env(env, job, cwd=cluster.RUNNER_DIR.parent / "elsewhere")
    assert "py_modules" not in cluster.driver_runtime_env(env, {"py_modules": ["gcs://mine.zip"]})
    # Ray takes one setup hook: a job's own is kept (and we warn that it must install our fix).
    assert "worker_process_setup_hook" not in cluster.driver_runtime_env(env, {"worker_process_setup_hook": "theirs.setup"})


def test_job_runtime_env_is_read_from_the_job_config_ray_sets():
    payload = json.dumps({"runtime_env": {"working_dir": "gcs://x.zip", "env_vars": {"A": "1"}}})
    assert cluster.job_runtime_env({"RAY_JOB_CONFIG_JSON_ENV_VAR": payload}) == {"working_dir": "gcs://x.zip", "env_vars": {"A": "1"}}
    assert cluster.job_runtime_env({}) == {}


def test_gpus_the_cluster_lacks_are_refused_naming_the_fix():
    a10g = joined(node(gpus=1, kind="A10G"), node(gpus=1, kind="A10G", node_id="n2"))
    wrong_type = cluster.resource_problems(config("hw=l4"), a10g)
    assert len(wrong_type) == 1 and "hw.accelerator_type=L4" in wrong_type[0] and "A10G" in wrong_type[0]
    assert "hw.accelerator_type=A10G" in wrong_type[0] and "ray.autoscaling=true" in wrong_type[0]
    assert cluster.resource_problems(config("hw=a10g"), a10g) == []
    cpus_only = cluster.resource_problems(config("hw=l4"), joined(node()))
    assert "has no GPUs" in cpus_only[0] and "Fix: hw=cpu" in cpus_only[0]
    too_many = cluster.resource_problems(config("hw=a10g", "processor.concurrency=3"), a10g)
    assert len(too_many) == 1 and "need 3" in too_many[0] and "processor.concurrency=2" in too_many[0]
    no_gpu = cluster.resource_problems(config("hw=h100", "hw.accelerator_type=null"), joined(node()))
    assert "has 0" in no_gpu[0] and "hw=cpu" in no_gpu[0]


def test_cpu_replicas_must_each_fit_on_one_node():
    two_nodes = joined(node(cpus=4), node(cpus=4, node_id="n2"))
    assert cluster.resource_problems(config("processor.concurrency=2", "hw.cpus_per_replica=3"), two_nodes) == []
    # 3 replicas of 3 CPUs: 8 CPUs in all, but only one replica fits on each 4-CPU node.
    three = cluster.resource_problems(config("processor.concurrency=3", "hw.cpus_per_replica=3"), two_nodes)
    assert len(three) == 1 and "hold 2" in three[0] and "processor.concurrency=2" in three[0]
    too_big = cluster.resource_problems(config("hw.cpus_per_replica=6"), two_nodes)
    assert "no node" in too_big[0] and "hw.cpus_per_replica=4 or less" in too_big[0]


def test_a_local_run_folder_is_refused_on_several_nodes_unless_shared(tmp_path):
    local = storage.resolve(str(tmp_path / "outputs/runs/x"))
    two_nodes = joined(node(), node(node_id="n2"))
    refused = cluster.check(config(), two_nodes, local)
    assert len(refused) == 1 and "output.uri=s3://" in refused[0] and "output.shared_mount=true" in refused[0]
    assert cluster.check(config("output.shared_mount=true"), two_nodes, local) == []
    # One node: its disk is the driver's.
    assert cluster.check(config(), joined(node()), local) == []
    # A cluster that adds nodes on demand may put work elsewhere, and lacks nothing yet.
    autoscaling = cluster.check(config("ray.autoscaling=true", "hw.cpus_per_replica=64"), joined(node()), local)
    assert len(autoscaling) == 1 and "ray.autoscaling=true" in autoscaling[0]


def test_only_a_model_on_the_drivers_disk_is_published(monkeypatch):
    monkeypatch.setattr(cluster, "_current", joined(node(), node(node_id="n2")))
    assert cluster.needs_publishing(config(), "/root/.cache/runner/models/smollm2-135m-instruct")
    assert not cluster.needs_publishing(config("model=llama31_8b"), "unsloth/Llama-3.1-8B-Instruct")
    assert not cluster.needs_publishing(config("model.source=local", "model.path=s3://b/m"), "s3://b/m")
    monkeypatch.setattr(cluster, "_current", joined(node()))
    assert not cluster.needs_publishing(config(), "/root/.cache/runner/models/smollm2-135m-instruct")


def test_publishing_copies_once_and_again_only_when_the_files_change(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "weights.bin").write_bytes(b"1234")
    root = storage.resolve(str(tmp_path / "shared/models"))
    target = cluster.publish_model(str(model), root)
    assert target == str(tmp_path / "shared/models/model") and (tmp_path / "shared/models/model/weights.bin").read_bytes() == b"1234"
    marker = tmp_path / "shared/models/model" / cluster.PUBLISHED_MARKER
    stamp = marker.stat().st_mtime_ns
    cluster.publish_model(str(model), root)
    assert marker.stat().st_mtime_ns == stamp
    (model / "weights.bin").write_bytes(b"123456")
    cluster.publish_model(str(model), root)
    assert (tmp_path / "shared/models/model/weights.bin").read_bytes() == b"123456"


def test_cluster_settings_cannot_be_out_of_range():
    problems = preflight.check_settings(config("ray.engine_start_timeout_s=0"))
    assert any(p.startswith("ray.engine_start_timeout_s=0 is out of range") for p in problems)


def test_local_input_is_read_on_the_drivers_node(monkeypatch, tmp_path):
    class Reader:
        def __init__(self, location):
            self.location = location

    local, remote = Reader(storage.resolve(str(tmp_path))), Reader(None)
    assert cluster.read_args(local, 0.25) == {"num_cpus": 0.25}  # a local Ray: every worker shares the disk
    monkeypatch.setattr(cluster, "_current", joined(node(), node(node_id="n2")))
    assert cluster.read_args(local, 0.25) == {"num_cpus": 0.25, "label_selector": {"ray.io/node-id": "n1" * 8}}
    assert cluster.read_args(remote, 0.25) == {"num_cpus": 0.25}
    # A head kept free of work (num-cpus 0) still reads its own disk.
    monkeypatch.setattr(cluster, "_current", joined(node(cpus=0.0), node(node_id="n2")))
    assert cluster.read_args(local, 0.25)["num_cpus"] == 0
