"""The shared engine: one vLLM engine, run as a Ray Serve deployment, that the jobs of a
sweep send their rows to (Ray Data LLM's ServeDeploymentProcessorConfig). Ray Serve LLM's
LLMServer runs it where it can import the installed vLLM; elsewhere (vLLM 0.26, the GPU
machines') the replica starts vLLM itself (runner.engine_server, `server_kind`).

Start-up (Ray, the engine process, weights, warm-up) is most of a small job's time: 46 of
~61 s for the default job on 2 cores. A sweep's jobs whose model, engine settings, hardware
and replica count are the same share one engine and one Ray, so it is paid once; a job that
changes any of them gets its own, and the previous engine is stopped first (no two engines
compete for the device). The engine lives until the sweep ends (runner.sweep), the process
exits, or a job leaves it broken; on a Ray cluster the run joined, nothing is shared (Serve's
controller outlives the job there, and the cluster is not ours).

Only Serve's light API is used here: defining the deployment from Ray Serve LLM's own
builder would import vLLM on the driver (runner.engine_server says why).
"""

from __future__ import annotations

import atexit
import hashlib
import functools
import importlib
import importlib.util
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from runner import batches_in_flight, cluster, engine_server, models, processes, run_state
from runner.models import ModelLocation
from runner.schema import ModelSource, RunConfig

log = logging.getLogger(__name__)

DEPLOYMENT = "engine"
APP_PREFIX = "runner-engine-"
# Ray Serve LLM's own defaults for an engine deployment: a replica takes every request the
# callers send (vLLM schedules them), and is checked every 10 s.
MAX_ONGOING_REQUESTS = 1_000_000_000
HEALTH_CHECK_PERIOD_S = 10
HEALTH_CHECK_TIMEOUT_S = 10
# How long a stopped engine's processes may take to exit before they are killed.
STOP_GRACE_S = 15.0
# An engine is stopped when its jobs are done (or the run is interrupted): Serve need not
# wait its default 2 s for requests still in flight before ending the replica.
SHUTDOWN_WAIT_LOOP_S = 0.2
PROBE_TIMEOUT_S = 20.0


class EngineNotReady(RuntimeError):
    """The engine replicas were not placed and loaded within ray.engine_start_timeout_s."""


@dataclass(frozen=True)
class Spec:
    """What the engine is: two jobs with equal keys can share one."""

    key: str
    server: str  # which replica runs vLLM: SERVE_LLM or DIRECT (server_kind)
    model_source: str
    engine_kwargs: Dict[str, Any]
    # Ray Serve LLM's config and the placement group its replica asks for (SERVE_LLM only).
    llm_config: Optional[Dict[str, Any]]
    bundles: Optional[List[Dict[str, float]]]
    # What the replica's own actor holds: nothing beside Ray Serve LLM's placement group, or
    # (DIRECT) the replica's CPUs or GPUs themselves.
    actor_resources: Dict[str, Any]
    replicas: int
    env: Dict[str, str]


@dataclass(frozen=True)
class EngineStart:
    """What a job's callers need to wait for the engine: it is asked for and not waited for,
    so that the callers (Ray Data's actors) start while it loads (runner.pipeline)."""

    app: str
    asked_at: float  # wall clock
    timeout_s: float  # ray.engine_start_timeout_s

    @property
    def deadline(self) -> float:
        return self.asked_at + self.timeout_s


@dataclass
class Engine:
    id: str
    key: str
    start: EngineStart
    ready_s: Optional[float] = None  # how long its deployment took, once it is up

    @property
    def app(self) -> str:
        return self.start.app


_current: Optional[Engine] = None
_kept_between_jobs = False
_exit_hook = False


def keep_between_jobs(on: bool) -> None:
    """Set by the sweep (runner.sweep): jobs leave the engine and Ray up for the next job."""
    global _kept_between_jobs
    _kept_between_jobs = on


def kept_between_jobs() -> bool:
    return _kept_between_jobs


# What Ray Serve LLM 2.60's engine server imports from vLLM. vLLM 0.26 (the newest built for
# torch 2.11, the GPU machines' torch) lacks it: there the server's replicas failed to start,
# retried for ~80 s a job, and a whole sweep wrote nothing (seen on an H200, 2026-11-28), so
# there the replica starts vLLM itself (server_kind).
SERVE_LLM_NEEDS_FROM_VLLM = ("entrypoints", "serve", "engine", "protocol.py")


@functools.lru_cache(maxsize=None)
def serve_llm_fits_vllm(vllm_dir: Optional[str] = None) -> bool:
    """Whether the installed vLLM has what Ray Serve LLM imports, found without importing
    vLLM on the driver (seconds; the engine's own process imports it)."""
    if vllm_dir is None:
        spec = importlib.util.find_spec("vllm")
        if spec is None or not spec.submodule_search_locations:
            return False
        vllm_dir = list(spec.submodule_search_locations)[0]
    return Path(vllm_dir).joinpath(*SERVE_LLM_NEEDS_FROM_VLLM).is_file()


SERVE_LLM = "serve_llm"  # Ray Serve LLM's LLMServer (engine_server.RowServer)
DIRECT = "direct"  # vLLM's AsyncLLM started by the replica itself (engine_server.DirectRowServer)
# Forces one of the two (tests; a vLLM whose fit the file check misjudges).
SERVER_ENV = "RUNNER_ENGINE_SERVER"


def server_kind() -> str:
    """Which replica runs the shared engine: Ray Serve LLM's where it imports the installed
    vLLM, else the runner's own. Decided on the driver without importing vLLM."""
    forced = os.environ.get(SERVER_ENV, "")
    if forced:
        if forced not in (SERVE_LLM, DIRECT):
            raise ValueError(f"{SERVER_ENV}={forced!r}: expected {SERVE_LLM} or {DIRECT}")
        return forced
    return SERVE_LLM if serve_llm_fits_vllm() else DIRECT


def wanted(cfg: RunConfig) -> bool:
    """Whether this job runs on the shared engine (processor.shared_engine; null: see below)."""
    if cluster.target(cfg.ray):
        return False
    setting = cfg.processor.shared_engine
    if setting is not None:
        return setting
    if _kept_between_jobs:
        return True
    return _single_job_default(cfg)


def _single_job_default(cfg: RunConfig) -> bool:
    """A single job too, where its engine is one replica on the CPU or on one GPU: there the
    shared engine's path started and ended the job sooner than Ray Data LLM's own engine
    (2-core CPU, default job: 54.6-55.1 s against 65.6-69.4 s; one H200, warm caches: 111.1
    against 124.1 s from Ray's start to the last file; runner/bench/RESULTS.md), where its
    batches keep the engine full. Several replicas or GPUs keep the job's own engine, the
    path measured there, as does a machine without Ray Serve."""
    one_device = cfg.processor.concurrency == 1 and (cfg.hw.gpus_per_replica or 0) <= 1
    return one_device and _callers_fill_the_engine(cfg) and _serve_import_error() is None and _unfetchable_model(cfg) is None


def _callers_fill_the_engine(cfg: RunConfig) -> bool:
    """A caller of the shared engine keeps a bounded number of blocks at it at once
    (runner.batches_in_flight): blocks so small that even those cannot fill engine.max_num_seqs,
    or an engine left to choose its own number, keep a single job on its own engine."""
    sequences = cfg.engine.max_num_seqs
    return bool(sequences) and batches_in_flight.requests_per_caller(cfg) >= sequences


def _unfetchable_model(cfg: RunConfig) -> Optional[str]:
    """A model folder in object storage, where the engine would be vLLM started by the replica
    (DIRECT): Ray Serve LLM's server fetches such a folder itself, vLLM does not."""
    if cfg.model.source != ModelSource.local or not models.is_remote(cfg.model.path or ""):
        return None
    try:
        return cfg.model.path if server_kind() == DIRECT else None
    except ValueError:
        return None  # a wrong RUNNER_ENGINE_SERVER: problems() names it


@functools.lru_cache(maxsize=None)
def _serve_import_error() -> Optional[ImportError]:
    """Why Ray Serve does not import here (ray[serve]'s extras missing), or None."""
    try:
        importlib.import_module("ray.serve")
    except ImportError as error:
        return error
    return None


def problems(cfg: RunConfig) -> List[str]:
    """What stops this job from using the shared engine, found before anything starts."""
    if not wanted(cfg):
        return []
    try:
        server_kind()
    except ValueError as error:
        return [str(error)]
    remote = _unfetchable_model(cfg)
    if remote:
        return [
            f"model.path={remote}: the shared engine here is vLLM started by its replica (Ray Serve LLM cannot import "
            "this vLLM), and it loads a model folder from local disk or the hub, not from object storage. "
            "Fix: processor.shared_engine=false (each job's own engine fetches the folder), or copy it to local disk"
        ]
    error = _serve_import_error()
    if error is not None:
        return [
            f"the shared engine (processor.shared_engine, on in sweeps) needs Ray Serve, which does not "
            f"import here ({error}). Fix: pip install 'ray[serve]==2.60.*' (python -m runner.install does), "
            "or processor.shared_engine=false for a per-job engine"
        ]
    return []


def current() -> Optional[Engine]:
    return _current


def spec(cfg: RunConfig, model: ModelLocation, env: Dict[str, str], engine_kwargs: Dict[str, Any]) -> Spec:
    hw = cfg.hw
    replicas = cfg.processor.concurrency
    if hw.gpus_per_replica:
        base = [{"GPU": 1.0, "CPU": 1.0}] * hw.gpus_per_replica
    else:
        base = [{"CPU": hw.cpus_per_replica}]
    accelerator = hw.accelerator_type if hw.gpus_per_replica else None
    # What Ray Serve LLM asks for the same config (checked again in the replica): an
    # accelerator hint in every bundle; the replica's own actor takes nothing beside the engine.
    bundles = [dict(b, **({f"accelerator_type:{accelerator}": 0.001} if accelerator else {})) for b in base]
    server = server_kind()
    key = json.dumps(
        {"model": model.source, "engine": engine_kwargs, "bundles": bundles, "replicas": replicas, "env": env, "server": server},
        sort_keys=True, default=str,
    )
    common = dict(key=key, server=server, model_source=model.source, engine_kwargs=engine_kwargs, replicas=replicas, env=env)
    if server == DIRECT:
        # The replica's actor holds what the placement group's bundles would: on one node,
        # vLLM shards over the GPUs Ray gives the actor.
        held: Dict[str, Any] = {"num_cpus": sum(b["CPU"] for b in base), "num_gpus": float(hw.gpus_per_replica or 0)}
        if accelerator:
            held["accelerator_type"] = accelerator
        return Spec(llm_config=None, bundles=None, actor_resources=held, **common)
    llm_config: Dict[str, Any] = dict(
        model_loading_config=dict(model_id=f"runner-{_digest(key)}", model_source=model.source),
        placement_group_config=dict(bundles=base),
        engine_kwargs=engine_kwargs,
        deployment_config=dict(num_replicas=replicas, ray_actor_options={"num_cpus": 0}),
        runtime_env={"env_vars": env},
        # Engine metrics would go to Ray's Prometheus exporter; the job measures from rows.
        log_engine_metrics=False,
        callback_config=dict(callback_class=f"{engine_server.__name__}.{engine_server.SkipNodeInit.__name__}"),
    )
    if accelerator:
        llm_config["accelerator_type"] = accelerator
    elif not hw.gpus_per_replica:
        llm_config["accelerator_config"] = dict(kind="cpu")  # accelerator_type stays unset on CPU
    return Spec(llm_config=llm_config, bundles=bundles, actor_resources={"num_cpus": 0}, **common)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def acquire(cfg: RunConfig, wanted_spec: Spec) -> Dict[str, Any]:
    """The running engine if it is this spec's and healthy, else a new one (the old one
    stopped first). Returns what the job records about it (runner.engine in MLflow)."""
    global _current
    _register_exit_hook()
    if _current is not None and _current.key == wanted_spec.key:
        problem = _problem(_current)
        if problem is None:
            log.info("engine %s: reused (started by an earlier job of this sweep)", _current.id)
            return {"id": _current.id, "mode": "shared", "started": False}
        log.warning("engine %s cannot be reused (%s); starting a new one", _current.id, problem)
    if _current is not None:
        log.info("a new engine for this job: %s", _key_change(_current.key, wanted_spec.key))
        stop()
    _current = _deploy(wanted_spec, cfg.ray.engine_start_timeout_s)
    threading.Thread(target=_watch, args=(_current,), name=f"engine-{_current.id}-start", daemon=True).start()
    return {"id": _current.id, "mode": "shared", "started": True}


def _key_change(old: str, new: str) -> str:
    """Which of the engine's settings differ from the running engine's (for the log)."""
    return ", ".join(run_state.config_changes(json.loads(old), json.loads(new))) or "its previous one is unusable"


def _deploy(wanted_spec: Spec, timeout_s: float) -> Engine:
    from ray import serve

    engine_id = f"{_digest(wanted_spec.key)}-{uuid.uuid4().hex[:4]}"
    app = f"{APP_PREFIX}{engine_id}"
    started = time.time()
    # No HTTP proxy (no port 8000): rows reach the engine through deployment handles only.
    serve.start(proxy_location="Disabled")
    if wanted_spec.server == DIRECT:
        server, args, placement = engine_server.DirectRowServer, (wanted_spec.model_source, wanted_spec.engine_kwargs), {}
    else:
        server, args = engine_server.RowServer, (wanted_spec.llm_config, wanted_spec.bundles)
        placement = dict(placement_group_bundles=wanted_spec.bundles, placement_group_strategy="PACK")
    deployment = serve.deployment(
        server,
        name=DEPLOYMENT,
        num_replicas=wanted_spec.replicas,
        ray_actor_options={**wanted_spec.actor_resources, "runtime_env": {"env_vars": dict(wanted_spec.env)}},
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        health_check_period_s=HEALTH_CHECK_PERIOD_S,
        health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
        graceful_shutdown_wait_loop_s=SHUTDOWN_WAIT_LOOP_S,
        **placement,
    )
    # Not blocking: serve.run would wait for the replicas with no time limit.
    serve._run(deployment.bind(*args), name=app, route_prefix=None, _blocking=False)
    engine = Engine(id=engine_id, key=wanted_spec.key, start=EngineStart(app, started, timeout_s))
    log.info("engine %s: starting (%d replica(s), model %s, %s)", engine_id, wanted_spec.replicas, wanted_spec.model_source,
             "Ray Serve LLM" if wanted_spec.server == SERVE_LLM else "vLLM started by the replica")
    return engine


def _watch(engine: Engine) -> None:
    """Logs when the engine is up: the job meanwhile goes on without waiting for it. (If it
    never comes up, the job's callers fail with the reason: wait_until_serving.)"""
    import ray

    while _current is engine and ray.is_initialized():
        try:
            if _start_state(engine.start):
                engine.ready_s = time.time() - engine.start.asked_at
                log.info("engine %s: ready in %.1f s", engine.id, engine.ready_s)
                return
        except Exception:  # noqa: BLE001 - failed or stopping: the job says why
            return
        time.sleep(0.5)


_seen_serving: set = set()


def wait_until_serving(start: EngineStart) -> None:
    """In a caller: until the engine takes requests (Serve would queue them for ever if it
    never came up), with the reason if it failed or ran out of time. Once per process."""
    if start.app in _seen_serving:
        return
    while not _start_state(start):
        time.sleep(0.5)
    _seen_serving.add(start.app)


def start_failure() -> Optional[Exception]:
    """A job failed on the shared engine: if the engine never came up, that is the reason
    to give, not the callers' wrapped copy of it."""
    import ray

    if _current is None or not ray.is_initialized():
        return None
    try:
        _start_state(_current.start)
    except RuntimeError as reason:  # EngineNotReady too
        return reason
    except Exception:  # noqa: BLE001 - Serve cannot say: the job's own error stands
        return None
    return None


def _start_state(start: EngineStart) -> bool:
    """True once the engine's application is running, False while it deploys; raises if it
    failed to deploy or was not up by its deadline."""
    from ray import serve

    status = serve.status().applications.get(start.app)
    if status is not None and status.status == "RUNNING":
        return True
    if status is not None and status.status == "DEPLOY_FAILED":
        raise RuntimeError(f"the engine failed to start: {_status_text(status)}")
    if time.time() > start.deadline:
        raise EngineNotReady(
            f"the engine did not start within ray.engine_start_timeout_s={start.timeout_s:g} s"
            + (f": {_status_text(status)}" if status is not None else "")
        )
    return False


def _status_text(status) -> str:
    parts = [status.message] if status.message else []
    for name, deployment in status.deployments.items():
        if deployment.message:
            parts.append(f"{name}: {_without_traceback(deployment.message)}")
    return "; ".join(parts)[:4000] or str(getattr(status.status, "value", status.status))


def _without_traceback(message: str) -> str:
    """Serve's message carries the replica's whole traceback, which Serve's controller also
    logs (to the run's log): its first line and the error it ended with say what happened."""
    if "Traceback (most recent call last)" not in message:
        return message
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f"{lines[0]} {lines[-1]} (the traceback is in the run's log)"


def _problem(engine: Engine) -> Optional[str]:
    """Why the engine cannot take a job now. Serve's view first; then the engine itself is
    asked, since Serve checks it only every 10 s and an engine core that died since (a job
    crashed it) would fail the next job's every row."""
    from ray import serve

    status = serve.status().applications.get(engine.app)
    if status is None:
        return "its deployment is gone"
    if status.status != "RUNNING":
        return f"its deployment is {status.status}: {_status_text(status)}"
    try:
        serve.get_deployment_handle(DEPLOYMENT, engine.app).check_health.remote().result(timeout_s=PROBE_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - any failure to answer means it cannot be trusted
        return f"it failed its health check ({type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''})"
    return None


def check_after_failure() -> None:
    """A job failed on the shared engine: a broken engine is stopped now, so that it holds
    no device while the sweep goes on; a healthy one waits for the next job."""
    if _current is None:
        return
    problem = _problem(_current)
    if problem is not None:
        log.warning("engine %s after the failed job: %s; stopping it", _current.id, problem)
        stop()


def stop() -> None:
    """Stop the current engine and wait for its processes (the replica, vLLM's engine core)."""
    global _current
    engine, _current = _current, None
    if engine is not None:
        _delete(engine)


def _delete(engine: Engine) -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    engine_processes = _engine_processes(engine.app)
    started = time.time()
    killed = []
    if engine.ready_s is None:
        # Still loading: nothing to finish, and Serve's delete waits until the replica's
        # constructor returns (15 s seen on 2 cores), so its processes go first.
        killed = processes.end(engine_processes, grace_s=0.0)
    try:
        serve.delete(engine.app)
    except Exception as error:  # noqa: BLE001 - its processes are ended below either way
        log.warning("engine %s: Serve could not delete it (%s); ending its processes", engine.id, error)
    killed += processes.end(engine_processes, grace_s=STOP_GRACE_S)
    log.info("engine %s: stopped in %.1f s%s", engine.id, time.time() - started, f", {len(killed)} process(es) killed" if killed else "")


def _engine_processes(app: str):
    """The replica processes of `app` and everything they started (vLLM's engine core)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if f"ServeReplica:{app}:" in " ".join(proc.cmdline()):
                found.append(proc)
                found.extend(proc.children(recursive=True))
        except psutil.Error:
            continue
    return found


def shutdown(graceful: bool = True) -> None:
    """Stop the engine, then Ray (runner.pipeline.stop_ray waits for every process it started,
    the engine's included, and kills what outlives its grace).

    Interrupted (graceful=False), the engine is not asked to stop: SIGTERM reaches the whole
    process group, Ray's own processes with it, and a call to a Serve controller that is
    going down aborted the driver (exit -6, no resume line)."""
    global _current
    from runner import pipeline

    try:
        if graceful:
            stop()
        else:
            _current = None
    finally:
        pipeline.stop_ray()


def end_of_sweep() -> None:
    """The sweep's last job is done: its engine and Ray stop."""
    import ray

    keep_between_jobs(False)
    if _current is not None or ray.is_initialized():
        shutdown()


def _register_exit_hook() -> None:
    """Ctrl-C or an error between two jobs (or anywhere Hydra's sweep loop is left early) ends
    the process without the sweep's end: the engine is stopped on the way out. Registered
    after ray.init, so it runs before Ray's own exit hook."""
    global _exit_hook
    if not _exit_hook:
        atexit.register(_at_exit)
        _exit_hook = True


def _at_exit() -> None:
    import ray

    if _current is not None or (ray.is_initialized() and _kept_between_jobs):
        shutdown(graceful=False)  # only an interrupted or failed sweep leaves anything here
