"""On a real two-node Ray cluster that runs join (tests/ray_cluster.py), input and runs on a
real S3 server on loopback (moto): the second node sees neither the driver's disk nor its
home, and the runner's code reaches it only through the job's runtime_env.

One cluster for the module (starting one costs ~10 s; two vLLM engines starting side by side
on the 2 cores most of the rest, which is why one scenario covers the submitted job, the
kill and the resume); each test leaves it up, with none of the run's actors alive.
"""

import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.fs as pafs
import pytest

from runner import storage
from tests.e2e_helpers import ROOT, SAMPLE_NEWS
from tests.ray_cluster import RAY_CLI, Cluster, ray_cluster
from tests.test_exactly_once import ids_in, launch, ok_ids

pytestmark = pytest.mark.slow

# Made here, so that the source shipped to the cluster (the job's working_dir) does not hold it.
PLANTED_AWS_SECRET = "wJalrXUtnFEMI/" + secrets.token_hex(16)
# 4 logical CPUs a node and 3 a replica: one replica fits on each node, never two on one.
CPUS_PER_NODE = 4
TWO_REPLICAS = ("processor.concurrency=2", "hw.cpus_per_replica=3")
ONE_REPLICA = ("processor.concurrency=1", "hw.cpus_per_replica=3")
# Several result files, so that the kill falls mid-run, and blocks enough for both replicas
# on the rows left to resume.
FOUR_ROW_BATCHES = ("processor.batch_size=4", "processor.rows_per_file=4", "processor.max_concurrent_batches=1")
# What is tested is where rows run and that each is written once, not the summaries: short ones
# spare the suite most of the generation (two replicas share two cores).
SHORT_SUMMARIES = ("prompt.max_tokens=32",)
NEWS_IDS = [json.loads(line)["id"] for line in SAMPLE_NEWS.read_text().splitlines()]
NEWS_ROWS = len(NEWS_IDS)
# What the run leaves on a node while an engine of it lives (Ray's worker, vLLM's processes).
ENGINE_PROCESS_MARKERS = ("MapWorker", "VLLM", "EngineCore")
# Ray Data's own detached actors, kept for the next run: Ray's, not the run's.
RAY_DATA_ACTORS = {"_StatsActor", "_AutoscalingCoordinatorActor", "ActorLocationTracker", "_TelemetryAgent", "_UsageCollectionActor"}


@dataclass
class Lab:
    cluster: Cluster
    bucket: str
    env: dict
    work: Path

    def run(self, name, *args, kill_at=None, extra_env=None):
        """The runner in a process of its own; its output is also kept in <work>/<name>.log."""
        env = {**self.env, "RAY_AUTH_MODE": "disabled", **(extra_env or {})}
        done = launch(self.work, list(args), kill_at, env)
        (self.work / f"{name}.log").write_text(done.stdout + done.stderr)
        return done


@pytest.fixture(scope="module")
def lab(s3, tmp_path_factory):
    # moto takes any key; this one must leak nowhere. This process reads the bucket too.
    with s3.environ(AWS_SECRET_ACCESS_KEY=PLANTED_AWS_SECRET) as env:
        bucket = s3.create_bucket("cluster-runs")[len("s3://"):]
        fs, _ = pafs.FileSystem.from_uri(f"s3://{bucket}")

        def upload(name):
            def write(text):
                with fs.open_output_stream(f"{bucket}/input/{name}") as stream:
                    stream.write(text.encode())
            return write

        upload("news.jsonl")(SAMPLE_NEWS.read_text())
        with ray_cluster(cpus_per_node=CPUS_PER_NODE, env=env) as cluster:
            yield Lab(cluster=cluster, bucket=bucket, env=env, work=tmp_path_factory.mktemp("cluster"))


BATCH_DONE = b"[vLLM] Elapsed time for batch"


def batches_per_node(lab: Lab) -> list:
    """Batches each node's engine replicas finished so far, from Ray Data LLM's per-batch line
    in the node's own worker logs (the driver's copy is deduplicated across the cluster)."""
    counts = []
    for index in range(len(lab.cluster.nodes)):
        logs = [p for session in lab.cluster.session_dirs(index) for p in (session / "logs").glob("worker-*.err")]
        counts.append(sum(p.read_bytes().count(BATCH_DONE) for p in logs))
    return counts


def assert_cluster_up_and_the_run_gone(lab: Lab, timeout_s: float = 90.0):
    """Both nodes up, no actor of a run alive, and no engine process left on either node
    (vLLM's processes take a while to go after their actor ends)."""
    assert all(node.alive() for node in lab.cluster.nodes)
    deadline = time.monotonic() + timeout_s
    while True:
        state = lab.cluster.ray_state()
        ours = [a for a in state["actors"] if a["state"] != "DEAD" and not a["detached"]]
        leftovers = [(pid, name) for node in lab.cluster.nodes for pid, name in _names(node.processes())
                     if any(marker in name for marker in ENGINE_PROCESS_MARKERS)]
        if not ours and not leftovers:
            break
        assert time.monotonic() < deadline, f"left on the cluster: actors {ours}, processes {leftovers}"
        time.sleep(2)
    assert sum(1 for n in state["nodes"] if n["alive"]) == 2
    assert {a["class"] for a in state["actors"] if a["state"] != "DEAD"} <= RAY_DATA_ACTORS


def _names(processes):
    """(pid, name) of each process still there: one may exit between the listing and the look."""
    for proc in processes:
        try:
            yield proc.pid, proc.name()
        except psutil.NoSuchProcess:
            continue


def assert_no_secret_anywhere(lab: Lab, outputs):
    """The planted secret reached the workers (they read and wrote the bucket) and was
    written nowhere: not in the drivers' folders and output, the bucket, or either node's
    Ray session (Ray's own logs, runtime_env files)."""
    needle = PLANTED_AWS_SECRET.encode()
    files = [p for p in lab.work.rglob("*") if p.is_file()]
    for index in range(len(lab.cluster.nodes)):
        files += [p for session in lab.cluster.session_dirs(index) for p in session.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 100  # both nodes' logs were found
    leaked = [str(p) for p in files if needle in p.read_bytes()]
    root = storage.resolve(f"s3://{lab.bucket}")
    # The published model's weights are a byte copy of the local converted checkpoint.
    objects = [e.path for e in root.list_files() if not e.path.endswith(".safetensors")]
    leaked += [path for path in objects if needle in storage.resolve(f"s3://{path}").read_bytes()]
    assert leaked == [] and not any(PLANTED_AWS_SECRET in o for o in outputs)


def test_refused_before_any_work_on_the_cluster(lab):
    """A GPU type the cluster lacks and a run folder on the driver's disk with two nodes:
    both named with their fix, exit 2, nothing written, the cluster untouched."""
    done = lab.run("refused", "runner", f"ray.address={lab.cluster.address}", "hw=l4", "engine.max_model_len=4096", "hydra.run.dir=outputs/runs/refused")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "hw.accelerator_type=L4" in output and "ray.autoscaling=true" in output
    assert "the cluster has 2 nodes" in output and "output.uri=s3://" in output and "output.shared_mount=true" in output
    assert "Traceback" not in output and not (lab.work / "outputs/runs/refused").exists()
    state = lab.cluster.ray_state()
    # Local input is read on the driver's node by this label, which Ray gives every node.
    assert all(n["labels"].get("ray.io/node-id") == n["id"] for n in state["nodes"]), state["nodes"]
    assert_cluster_up_and_the_run_gone(lab, timeout_s=10)


def test_default_job_submitted_killed_mid_run_and_resumed_each_row_once_on_both_nodes(lab):
    """The default job (with short summaries), input and run on S3, submitted with `ray job submit --working-dir .`;
    its driver is SIGKILLed once the first results are written (RUNNER_KILL_AT, from the
    job's runtime_env), and a driver started elsewhere with only RAY_ADDRESS set finishes it
    with `python -m runner.resume s3://... --force processor.concurrency=2`: two replicas,
    one a node (a scheduling setting, so --force may change it; the killed job ran one, which
    spares the suite an engine start-up).

    The job's runtime_env sets an env var hw=cpu sets too (merged, no conflict) and carries
    the code (working_dir); the resuming driver ships it (py_modules)."""
    run_uri = f"s3://{lab.bucket}/runs/runs/job"
    job_env = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1", "RUNNER_KILL_AT": "results_written:1"}}
    job = subprocess.run(
        [
            RAY_CLI, "job", "submit", "--address", lab.cluster.dashboard, "--working-dir", str(ROOT),
            "--runtime-env-json", json.dumps(job_env), "--",
            sys.executable, "-m", "runner", *ONE_REPLICA, *FOUR_ROW_BATCHES, *SHORT_SUMMARIES, f"dataset.path=s3://{lab.bucket}/input/news.jsonl",
            f"output.uri=s3://{lab.bucket}/runs", "tracking.enabled=false", "hydra.run.dir=outputs/runs/job",
        ],
        cwd=ROOT, env={**lab.cluster.env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600,
    )
    job_output = job.stdout + job.stderr
    (lab.work / "job.log").write_text(job_output)
    assert job.returncode != 0 and "joined the Ray cluster" in job_output, job_output[-5000:]
    assert "VLLM_CPU_KVCACHE_SPACE is set by the job's runtime_env (1) and by hw.env (2)" in job_output
    assert "publishing model" in job_output
    written = ids_in(storage.resolve(run_uri).child("results"))
    assert 0 < len(written) < NEWS_ROWS and len(set(written)) == len(written), job_output[-5000:]
    # The kill took the job's driver, not the cluster.
    assert_cluster_up_and_the_run_gone(lab)

    before = batches_per_node(lab)
    resumed = lab.run("resumed", "runner.resume", run_uri, "--force", *TWO_REPLICAS, extra_env={"RAY_ADDRESS": lab.cluster.address})
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-4000:]
    assert "joined the Ray cluster" in output
    run = storage.resolve(run_uri)
    ids = ok_ids(run)
    assert sorted(ids) == sorted(NEWS_IDS) and len(ids) == NEWS_ROWS, ids  # every article once, none failed
    assert json.loads(run.child("manifest.json").read_text())["status"] == "finished"
    # Each node's replica took batches; the second node's loaded the model it fetched from the
    # bucket into its own home (it cannot see the driver's converted copy).
    after = batches_per_node(lab)
    assert all(a > b for a, b in zip(after, before)), (before, after)
    # The workers' output (the replica's model path among it) is in the run's log, not the terminal.
    log_lines = [line.split(None, 1)[1] for line in output.splitlines() if line.startswith("  log ")]
    assert log_lines, output[-3000:]
    log_path = Path(log_lines[0].split(" (", 1)[0])
    assert "/tmp/home/.cache/huggingface" in (log_path if log_path.is_absolute() else lab.work / log_path).read_text()
    assert_cluster_up_and_the_run_gone(lab)
    assert_no_secret_anywhere(lab, [job_output, output])


def test_an_engine_that_cannot_be_placed_stops_the_run_in_bounded_time(lab):
    """A cluster said to autoscale is not refused up front; replicas it never places stop the
    run after ray.engine_start_timeout_s, with what was missing and the resume line."""
    started = time.time()
    done = lab.run(
        "stuck", "runner", f"ray.address={lab.cluster.address}", "ray.autoscaling=true", "hw.cpus_per_replica=16", "ray.engine_start_timeout_s=5",
        # No chat-template stage: its actors (a tokenizer to fetch) would use up a 5 s wait before the engine's.
        "prompt.chat_template=false", "tracking.enabled=false", f"output.uri=s3://{lab.bucket}/runs", "hydra.run.dir=outputs/runs/stuck",
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-4000:]
    assert "did not start within ray.engine_start_timeout_s=5 s" in output and "no node could ever hold an engine replica (CPU 16 each; the largest node has CPU 4)" in output
    # Ray Data logs its own stack trace of the timeout; the runner says it in one line.
    said = [line for line in output.splitlines() if "[runner][ERROR]" in line]
    assert len(said) == 1 and f"finish it with: python -m runner.resume s3://{lab.bucket}/runs/runs/stuck" in said[0], said
    assert time.time() - started < 60
    assert_cluster_up_and_the_run_gone(lab, timeout_s=30)
