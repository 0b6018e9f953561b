"""Running on a Ray cluster someone else runs: joining it, checking it, and what each node needs.

A run joins an existing cluster when `ray.address` is set (`auto`, `host:port`) or, with
`ray.address` unset, when RAY_ADDRESS is (what `ray job submit` and KubeRay pods set);
`ray.address=local` always starts a Ray of its own. A joined cluster is not ours: the run
never sizes it (num_cpus, dashboard), never stops or kills its processes, and on the way out
ends only its own actors, then disconnects.

Nothing may be driver-local on a cluster of several nodes: the runner's code goes to every
worker through the job's runtime_env (py_modules, unless the job's working_dir already holds
it), the run's location must be a URI (or a mount every node shares), a model folder only the
driver has is published to the run's storage for the engines to fetch, and local input is read
on the driver's own node.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from runner import chatter, models, storage, worker_setup
from runner.schema import HardwareConfig, ModelSource, ModelWeights, RayConfig, RunConfig
from runner.storage import Location

log = logging.getLogger(__name__)

LOCAL = "local"
RUNNER_DIR = Path(__file__).resolve().parent
# A published model's files are complete once this is written (last), with what it was copied from.
PUBLISHED_MARKER = ".runner-published"
MODELS_FOLDER = "models"
# The label Ray gives every node: its id.
NODE_ID_LABEL = "ray.io/node-id"
NODE_PROBE_TIMEOUT_S = 120.0
JOB_SUBMIT_FIX = (
    "submit the run as a Ray job instead: ray job submit --address http://<head>:8265 --working-dir . -- "
    "python -m runner ... (or run it on a node of the cluster with ray.address=auto)"
)


@dataclass
class Cluster:
    """The cluster this process joined, as it was when it joined."""

    address: str
    nodes: List[Dict[str, Any]] = field(default_factory=list)  # alive nodes, as ray.nodes() gives them
    driver_node: str = ""

    def resources(self) -> Dict[str, float]:
        total: Dict[str, float] = {}
        for node in self.nodes:
            for name, amount in node["Resources"].items():
                total[name] = total.get(name, 0.0) + amount
        return total

    def multi_node(self, cfg: RunConfig) -> bool:
        """Whether work may run on a node other than the driver's (now, or once it autoscales)."""
        return len(self.nodes) > 1 or cfg.ray.autoscaling


_current: Optional[Cluster] = None


def current() -> Optional[Cluster]:
    """The cluster this process has joined and not left yet; None for a local Ray or none."""
    return _current


def target(ray_cfg: RayConfig, environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The address of an existing cluster this run joins, or None where it starts its own Ray."""
    environ = os.environ if environ is None else environ
    address = ray_cfg.address or environ.get("RAY_ADDRESS") or None
    if not address or str(address).strip().lower() == LOCAL:
        return None
    return str(address).strip()


def address_problems(cfg: RunConfig, environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Addresses this runner cannot join, found before anything starts."""
    address = target(cfg.ray, environ)
    if not address or not address.startswith("ray://"):
        return []
    setting = f"ray.address={address}" if cfg.ray.address else f"RAY_ADDRESS={address} (in the environment)"
    return [
        f"{setting} is a Ray Client address: the runner's driver streams results from the engines to storage and "
        f"waits on them for hours, which Ray Client does not carry reliably. Fix: {JOB_SUBMIT_FIX}"
    ]


def job_runtime_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """The runtime_env of the Ray job this driver runs in (`ray job submit`), or {}."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    environ = os.environ if environ is None else environ
    raw = environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
    if not raw:
        return {}
    try:
        return dict(json.loads(raw).get("runtime_env") or {})
    except (ValueError, AttributeError):
        return {}


def without_job_env(env: Mapping[str, str], job_env: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
    """hw.env's variables less those the job's runtime_env sets: inside a Ray job every
    ray.init (ours, and Ray Data LLM's own while it builds the processor) merges its
    runtime_env with the job's and fails on a key both set. The job's value is the one used."""
    job_vars = (job_runtime_env() if job_env is None else job_env).get("env_vars") or {}
    for name in sorted(set(env) & set(job_vars)):
        if str(job_vars[name]) != str(env[name]):
            log.info("%s is set by the job's runtime_env (%s) and by hw.env (%s): the job's value is used", name, job_vars[name], env[name])
    return {k: v for k, v in env.items() if k not in job_vars}


def driver_runtime_env(env: Mapping[str, str], job_env: Mapping[str, Any], cwd: Optional[Path] = None) -> Dict[str, Any]:
    """What ray.init adds to the job's runtime_env; Ray refuses a key both set, so the job's
    own win (its env vars, its working_dir or py_modules).

    The runner's code must reach every worker: a job submitted with --working-dir . from the
    repository already carries it; otherwise the package goes as py_modules (Ray zips and
    uploads it once; each node unpacks it for its workers).
    """
    ours: Dict[str, Any] = {}
    env_vars = without_job_env(env, job_env)
    if env_vars:
        ours["env_vars"] = env_vars
    working_dir_has_runner = bool(job_env.get("working_dir")) and _inside(RUNNER_DIR, cwd or Path.cwd())
    if "py_modules" in job_env:
        log.info("the job's runtime_env sets py_modules; it must carry the runner package for the workers")
    elif not working_dir_has_runner:
        ours["py_modules"] = [str(RUNNER_DIR)]
    if "worker_process_setup_hook" in job_env:
        log.warning("the job's runtime_env sets worker_process_setup_hook; it must call %s, or a batch whose rows all fail "
                    "stops the run (runner/ray_fixes.py)", worker_setup.SETUP_HOOK)
    else:
        ours["worker_process_setup_hook"] = worker_setup.SETUP_HOOK
    return ours


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def connect(cfg: RunConfig, env: Mapping[str, str]) -> Cluster:
    """Join the cluster `target` names; cheap (no process starts here). Raises ConnectionError."""
    import ray

    global _current
    address = target(cfg.ray)
    if address is None:
        raise ValueError("connect() is for joining a cluster; ray.address/RAY_ADDRESS name none")
    runtime_env = driver_runtime_env(env, job_runtime_env())
    with chatter.around_ray_init():  # the workers' output to the run's log unless log.verbose
        ray.init(address=address, runtime_env=runtime_env or None, log_to_driver=True)
    _current = describe(address)
    log.info(
        "joined the Ray cluster at %s: %d node(s), %s", address, len(_current.nodes),
        ", ".join(f"{k} {v:g}" for k, v in sorted(_current.resources().items()) if k in ("CPU", "GPU") or k.startswith("accelerator_type:")),
    )
    return _current


def describe(address: str) -> Cluster:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return Cluster(address=address, nodes=nodes, driver_node=ray.get_runtime_context().get_node_id())


def disconnect(grace_s: float = 30.0) -> None:
    """Leave the cluster: end the run's own actors (never anyone else's), then disconnect."""
    import ray

    global _current
    try:
        if ray.is_initialized():
            _end_own_actors(grace_s)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _current = None


def _own_live_actors() -> List[Dict[str, Any]]:
    import ray
    from ray._private import state

    job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
    # Detached actors outlive jobs by design (Ray Data keeps a few of its own, reused by the
    # next run): they are Ray's, not the run's.
    return [a for a in state.actors(job_id=job).values() if a["State"] != "DEAD" and not a["IsDetached"]]


def _end_own_actors(grace_s: float) -> None:
    """Ray ends a job's actors when its driver disconnects, but asynchronously; the next run
    on the cluster, or the person at it, should find them gone when this one returns."""
    import ray

    try:
        alive = _own_live_actors()
    except Exception as error:  # noqa: BLE001 - the GCS may be gone: disconnecting is all that is left
        log.debug("could not list the run's actors: %s", error)
        return
    if not alive:
        return
    worker = ray._private.worker.global_worker
    for actor in alive:
        try:
            worker.core_worker.kill_actor(ray.ActorID.from_hex(actor["ActorID"]), True)
        except Exception as error:  # noqa: BLE001 - it may have ended meanwhile
            log.debug("could not end actor %s: %s", actor["ActorID"], error)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            if not _own_live_actors():
                break
        except Exception:  # noqa: BLE001
            break
        time.sleep(0.5)
    log.info("ended %d actor(s) this run had left on the cluster", len(alive))


# ------------------------------------------------------------------ checks once joined


def check(cfg: RunConfig, cluster: Cluster, location: Location) -> List[str]:
    """What would stop the run on this cluster, found before any work: each problem names
    the setting and the fix."""
    problems = resource_problems(cfg, cluster)
    if cfg.ray.autoscaling and problems:
        for problem in problems:
            log.warning("%s (ray.autoscaling=true: waiting for the cluster to add them, up to ray.engine_start_timeout_s)", problem)
        problems = []
    if cluster.multi_node(cfg):
        problems += location_problems(cfg, cluster, location)
        problems += model_problems(cfg, cluster)
    return problems


def _autoscaling_hint() -> str:
    return "; if the cluster adds such nodes on demand, set ray.autoscaling=true"


def resource_problems(cfg: RunConfig, cluster: Cluster) -> List[str]:
    """Engine replicas the cluster could never place: Ray would wait for them forever."""
    hw, replicas = cfg.hw, cfg.processor.concurrency
    nodes = [n["Resources"] for n in cluster.nodes]
    where = f"the cluster at {cluster.address}"
    if hw.gpus_per_replica:
        per_replica, wanted = hw.gpus_per_replica, hw.accelerator_type
        types = sorted({k.split(":", 1)[1] for r in nodes for k in r if k.startswith("accelerator_type:")})
        any_gpus = any(r.get("GPU") for r in nodes)
        if wanted and wanted not in types:
            if types:
                have, fix = f"GPUs of type {', '.join(types)}", f"hw.accelerator_type={types[0]}, or hw.accelerator_type=null for any GPU"
            elif any_gpus:
                have, fix = "GPUs without a type label", "hw.accelerator_type=null for any GPU"
            else:
                have, fix = "no GPUs", "hw=cpu"
            return [
                f"hw.accelerator_type={wanted} (hw={hw.name}), but {where} has {have}, so Ray would never place the "
                f"engine. Fix: {fix}, or join a cluster with {wanted} GPUs{_autoscaling_hint()}"
            ]
        gpus = int(sum(r.get("GPU", 0) for r in nodes if not wanted or f"accelerator_type:{wanted}" in r))
        kind = f"{wanted} " if wanted else ""
        if gpus < per_replica:
            return [
                f"hw={hw.name} asks for {per_replica} {kind}GPU(s) per replica, but {where} has {gpus}. "
                f"Fix: hw=cpu, or join a cluster with such GPUs{_autoscaling_hint()}"
            ]
        if gpus < per_replica * replicas:
            return [
                f"processor.concurrency={replicas} replicas x hw.gpus_per_replica={per_replica} need {per_replica * replicas} "
                f"{kind}GPUs, but {where} has {gpus}. Fix: processor.concurrency={gpus // per_replica}{_autoscaling_hint()}"
            ]
        return []
    per_replica = hw.cpus_per_replica
    # A replica's CPUs are one bundle: they must all be on one node.
    fits = sum(int(r.get("CPU", 0) // per_replica) for r in nodes)
    most = max((r.get("CPU", 0) for r in nodes), default=0)
    if fits == 0:
        return [
            f"hw.cpus_per_replica={per_replica:g}: no node of {where} has that many CPUs (the most is {most:g}). "
            f"Fix: hw.cpus_per_replica={max(most, 1):g} or less{_autoscaling_hint()}"
        ]
    if fits < replicas:
        return [
            f"processor.concurrency={replicas} replicas of hw.cpus_per_replica={per_replica:g} CPUs: the nodes of {where} "
            f"hold {fits}. Fix: processor.concurrency={fits}{_autoscaling_hint()}"
        ]
    return []


def location_problems(cfg: RunConfig, cluster: Cluster, location: Location) -> List[str]:
    if not location.is_local or cfg.output.shared_mount:
        return []
    nodes = f"{len(cluster.nodes)} nodes" if len(cluster.nodes) > 1 else "nodes added on demand (ray.autoscaling=true)"
    return [
        f"the run's folder {location} is on this machine's disk, but the cluster has {nodes}: results written on the "
        "others would land on their own disks, lost to this run. Fix: output.uri=s3://<bucket>/<prefix> (any URI every "
        f"node and this driver can reach), or output.shared_mount=true if {location} is on storage every node mounts at "
        "that same path"
    ]


def model_problems(cfg: RunConfig, cluster: Cluster) -> List[str]:
    """A model folder given by a local path must be at that path on every node that may load it."""
    model = cfg.model
    if model.source != ModelSource.local or model.weights != ModelWeights.real or models.is_remote(model.path):
        return []
    path = str(Path(model.path).expanduser())
    missing = nodes_lacking(os.path.join(path, "config.json"), cluster)
    if not missing:
        return []
    return [
        f"model.path={model.path!r} is a folder the engines load where they run, and it is missing on node(s) "
        f"{', '.join(missing)}. Fix: put it at that path on every node, or upload it and set model.path=s3://<bucket>/<folder> "
        "(the engines fetch it)"
    ]


def nodes_lacking(path: str, cluster: Cluster) -> List[str]:
    """The nodes (address and id) on which `path` is not a file, asked by one task per node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(os.path.isfile)
    refs = {
        f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})": probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        ).remote(path)
        for node in cluster.nodes
    }
    found = dict(zip(refs, ray.get(list(refs.values()), timeout=NODE_PROBE_TIMEOUT_S)))
    return [name for name, present in found.items() if not present]


# ------------------------------------------------------------------ per-node set-up


def models_root(cfg: RunConfig, outputs_root: Path) -> Location:
    """Where published models live: beside the runs, under output.uri (or outputs/ on a shared mount)."""
    return storage.resolve(cfg.output.uri or str(outputs_root)).child(MODELS_FOLDER)


def needs_publishing(cfg: RunConfig, model_source: str) -> bool:
    """A model the driver converted or assembled (embedded, dummy weights) exists only on its disk."""
    cluster = current()
    if cluster is None or not cluster.multi_node(cfg) or models.is_remote(model_source):
        return False
    return cfg.model.source == ModelSource.embedded or cfg.model.weights == ModelWeights.dummy


def publish_model(folder: str, root: Location) -> str:
    """Copy a local model folder under `root` once (reused while its files are unchanged);
    returns what the engines load: the URI (they fetch it where they run) or the shared path."""
    import pyarrow.fs as pafs

    source = Path(folder)
    target = root.child(source.name)
    files = {p.relative_to(source).as_posix(): p.stat().st_size for p in sorted(source.rglob("*")) if p.is_file()}
    fingerprint = json.dumps({"source": str(source), "files": files}, sort_keys=True)
    marker = target.child(PUBLISHED_MARKER)
    if marker.exists() and marker.read_text() == fingerprint:
        log.info("model %s is already at %s", source.name, target)
        return target.uri if not target.is_local else target.path
    started = time.time()
    log.info("publishing model %s (%.0f MB) to %s, for the engines on every node", source.name, sum(files.values()) / 1e6, target)
    if marker.exists():
        marker.delete()
    if target.is_local:
        os.makedirs(target.path, exist_ok=True)
    pafs.copy_files(str(source), target.path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=target.fs)
    marker.write_text(fingerprint)
    log.info("model published in %.1f s", time.time() - started)
    return target.uri if not target.is_local else target.path


def read_args(reader, num_cpus: float) -> Dict[str, Any]:
    """Ray options of the input's read tasks.

    They ask for `num_cpus` (the light stages' share): a whole CPU each, Ray Data's default,
    never fit beside CPU engine replicas sized to their nodes (4 CPUs, 3 per replica, and
    the read task waited forever). On a cluster, local input is read on the driver's node:
    its path means nothing on the others.
    """
    args: Dict[str, Any] = {"num_cpus": num_cpus}
    cluster = current()
    location = getattr(reader, "location", None)
    if cluster is not None and location is not None and location.is_local:
        args["label_selector"] = {NODE_ID_LABEL: cluster.driver_node}
        driver = next((n for n in cluster.nodes if n["NodeID"] == cluster.driver_node), None)
        if driver is not None and not driver["Resources"].get("CPU"):
            args["num_cpus"] = 0  # a head node kept free of work (KubeRay's advice) still reads its own disk
    return args


def replica_needs(hw: HardwareConfig) -> Dict[str, float]:
    """What one engine replica asks Ray for (runner.pipeline.processor_config's bundles)."""
    if hw.gpus_per_replica:
        needs = {"GPU": hw.gpus_per_replica, "CPU": hw.gpus_per_replica}
        if hw.accelerator_type:
            needs[f"accelerator_type:{hw.accelerator_type}"] = 0.001
        return needs
    return {"CPU": hw.cpus_per_replica}


def _holds(resources: Mapping[str, float], needs: Mapping[str, float]) -> bool:
    return all(resources.get(name, 0.0) >= amount for name, amount in needs.items())


def _words(resources: Mapping[str, float]) -> str:
    shown = {k: v for k, v in resources.items() if k in ("CPU", "GPU")}
    return ", ".join(f"{k} {v:g}" for k, v in sorted(shown.items())) or "none"


def unplaced_engines(cfg: RunConfig) -> str:
    """Why the run's actors did not start, in words, from what each node has in all and what
    is free now (Ray Data has ended the actors and their placement groups by then)."""
    import ray

    hw, replicas = cfg.hw, cfg.processor.concurrency
    needs = replica_needs(hw)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_replica = f"{_words(needs)}{' of type ' + hw.accelerator_type if hw.gpus_per_replica and hw.accelerator_type else ''}"
    if not any(_holds(n["Resources"], needs) for n in nodes):
        largest = max((n["Resources"] for n in nodes), key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        return (
            f"no node could ever hold an engine replica ({per_replica} each; the largest node has {_words(largest)}), and "
            f"none was added meanwhile. Fix: hw.cpus_per_replica / hw.gpus_per_replica within a node, or a cluster with such nodes"
        )
    free = ray.available_resources()
    if not _holds(free, {k: v * replicas for k, v in needs.items()}):
        return (
            f"processor.concurrency={replicas} replica(s) of {per_replica} do not fit in what the cluster has free "
            f"({_words(free)}): other work holds the rest. Fix: run when it is done, or lower processor.concurrency"
        )
    return (
        "their resources are free: they were still starting (loading the model, or a stage's tokenizer). "
        "Fix: raise ray.engine_start_timeout_s"
    )
