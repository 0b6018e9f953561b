"""The Ray Data LLM pipeline: read rows -> prompt -> vLLM engine -> shape -> write.

The module that runs Ray (runner.warm_engine keeps the shared engine's Serve application,
runner.cluster a joined cluster). The rows go to the job's own engine (Ray Data LLM's
vLLMEngineProcessorConfig) or to the engine a sweep's jobs share (ServeDeploymentProcessorConfig).
Results stream from the engine to files in the run folder; nothing is collected into the driver.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.abc
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from runner import batches_in_flight, chatter, cluster, engine_server, faults, outputs, processes, prompt, ray_fixes, readers, redaction, results, run_state, samples, structured, warm_engine, worker_setup
from runner.models import ModelLocation
from runner.schema import OnRowError, OutputFormat, PromptConfig, RunConfig
from runner.storage import Location

log = logging.getLogger(__name__)

# Ray Data reserves a run's share of the cluster through a coordinator actor that every job
# on it shares, renews the reservation every 10 s and lets it lapse after 180 s. A driver
# killed mid-run leaves its reservation behind that long, and a resume started meanwhile was
# told the cluster had 0 CPUs to spare: one task at a time, one replica used. 30 s frees it
# soon after. Read when ray.data is first imported, which is after this.
os.environ.setdefault("RAY_DATA_AUTOSCALING_REQUEST_EXPIRE_TIME_S", "30")


EngineNotReady = warm_engine.EngineNotReady


@dataclass
class PipelineRun:
    results_dir: Location
    started_at: float  # wall clock, before Ray starts
    finished_at: float  # wall clock, after the last file is written
    # When each step in between ended (wall clock), so a benchmark can place its time.
    marks: Dict[str, float] = field(default_factory=dict)
    # Which engine ran the rows: id, mode (per_job or shared), whether this job started it.
    engine: Dict[str, Any] = field(default_factory=dict)


def engine_kwargs(cfg: RunConfig, location: ModelLocation) -> Dict[str, Any]:
    """vLLM EngineArgs from the engine group, unset ones left to vLLM."""
    engine = dataclasses.asdict(cfg.engine)
    extra = dict(engine.pop("extra") or {})
    kwargs = {k: v for k, v in engine.items() if v is not None}
    kwargs.update(extra)
    if location.load_format:
        kwargs["load_format"] = location.load_format
    if cfg.model.revision:
        kwargs["revision"] = cfg.model.revision
    if cfg.model.tokenizer:
        kwargs["tokenizer"] = cfg.model.tokenizer
    if cfg.model.trust_remote_code:
        kwargs["trust_remote_code"] = True
    return kwargs


def worker_env(cfg: RunConfig, hub_token: Optional[str] = None) -> Dict[str, str]:
    """What Ray hands the workers through runtime_env: hw.env's settings, never a secret.

    Ray writes every runtime_env variable, value included, into its session logs
    (runtime_env_agent.log, readable by all), so `hub_token` is deliberately left out: a
    local Ray's workers inherit the driver's environment, HF_TOKEN and storage credentials
    included, and a cluster's nodes need them set there (README, Secrets).
    """
    return {str(k): str(v) for k, v in (cfg.hw.env or {}).items() if not redaction.is_secret_name(str(k))}


def start_ray(cfg: RunConfig, env: Dict[str, str]) -> None:
    """Join the cluster ray.address or RAY_ADDRESS names (runner.cluster), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    ray_fixes.install()
    if cluster.target(cfg.ray):
        cluster.connect(cfg, env)
        return
    # "local" overrides a RAY_ADDRESS in the environment. Ray adds the setup hook's variable to
    # the env_vars it is given, in place: a copy keeps it out of the job's env (the shared
    # engine's key is made from it, and only the first job's would have had it).
    runtime_env = {"env_vars": dict(env), "worker_process_setup_hook": worker_setup.SETUP_HOOK}
    kwargs: Dict[str, Any] = {"address": "local", "runtime_env": runtime_env, "log_to_driver": True}
    # The dashboard's processes start beside the engine and take CPU it needs to start.
    kwargs["include_dashboard"] = cfg.ray.dashboard
    if cfg.ray.num_cpus:
        kwargs["num_cpus"] = cfg.ray.num_cpus
    with chatter.around_ray_init():  # the workers' output to the run's log unless log.verbose
        ray.init(**kwargs)


def configure_data_context(cfg: RunConfig) -> None:
    """Ray Data settings of the run, on the driver's current DataContext."""
    import warnings

    from ray.data import DataContext

    context = DataContext.get_current()
    # Which rows are done is read from the results (runner.run_state), not a checkpoint.
    context.checkpoint_config = None
    # Every engine replica is up before the first batch goes out, or the first one up takes
    # them all (up to 2 x max_concurrent_batches in flight): with processor.concurrency=2
    # on two nodes both batches of a 32-row job went to one. The same wait bounds a run
    # whose engines can never be placed, which Ray would otherwise wait on forever.
    context.wait_for_min_actors_s = cfg.ray.engine_start_timeout_s
    batches_in_flight.apply(cfg)
    if cfg.processor.concurrency > 1:
        # Locality sends a block to the replica on the node that holds it until that one is
        # full; rows are small next to generating from them, so the least busy replica wins.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            context.execution_options.actor_locality_enabled = False


ROW_ERROR = "__runner_error__"


def _placeholder_request(prompt_cfg: PromptConfig) -> Dict[str, Any]:
    """What a row that cannot become a prompt sends to the engine: one token of work, so the
    row still flows through the single streaming pass and is accounted for at the end.
    Same fields and types as a real request, since rows share one Arrow schema per block."""
    request: Dict[str, Any] = {"sampling_params": {**prompt.sampling_params(prompt_cfg), "max_tokens": 1}}
    if prompt_cfg.chat_template:
        request["messages"] = [{"role": "user", "content": "."}]
    else:
        request["prompt"] = "."
    return request


def _preprocess(row: Dict[str, Any], prompt_cfg: PromptConfig, columns: Dict[str, str], id_column: str, fail_fast: bool) -> Dict[str, Any]:
    request = _request_row(row, prompt_cfg, columns, id_column, fail_fast)
    if samples.SAMPLE_COLUMN in row:
        # Every row of a sampled run carries a seed (rows share one Arrow schema per block).
        request["sampling_params"] = {**request["sampling_params"], "seed": int(row[samples.SAMPLE_COLUMN])}
    return request


def _request_row(row: Dict[str, Any], prompt_cfg: PromptConfig, columns: Dict[str, str], id_column: str, fail_fast: bool) -> Dict[str, Any]:
    unreadable = row.get(readers.INPUT_ERROR_COLUMN)
    if unreadable:
        # A line the reader could not turn into a row (bad JSON, bad bytes): the scan already
        # stopped a fail-fast run on it, so here it is only recorded.
        return {**row, **_placeholder_request(prompt_cfg), ROW_ERROR: unreadable}
    try:
        return {**row, **prompt.build_request(row, prompt_cfg, columns), ROW_ERROR: ""}
    except prompt.PromptInputError as error:
        reason = f"row {id_column}={row.get(id_column)!r}: {error}"
        if fail_fast:
            raise prompt.PromptInputError(f"{reason}. Fix the data, or set errors.on_row_error=continue") from None
        return {**row, **_placeholder_request(prompt_cfg), ROW_ERROR: str(error)}


def _postprocess(row: Dict[str, Any], original_columns: List[str], row_outputs: outputs.RowOutputs, id_column: str, fail_fast: bool) -> Dict[str, Any]:
    # The shared engine answers a request it refuses like any other (runner.engine_server).
    rejected = row.get(engine_server.ENGINE_ERROR) or ""
    error = row.get(ROW_ERROR) or row.get("__inference_error__") or rejected
    if fail_fast and rejected and error == rejected:
        raise ValueError(f"row {id_column}={row.get(id_column)!r}: {rejected}. Or set errors.on_row_error=continue")
    out = results.shape_result(row, original_columns, error=error)
    row_outputs.apply(out, row)
    if fail_fast and out[results.ERROR_COLUMN] and not error:
        raise ValueError(f"row {id_column}={row.get(id_column)!r}: {out[results.ERROR_COLUMN]}. Or set errors.on_row_error=continue")
    return out


_REQUEST_FIELDS = ("messages", "prompt", "sampling_params")


def _serve_request_once_up(row: Dict[str, Any], engine_start: warm_engine.EngineStart, **kwargs) -> Dict[str, Any]:
    """A job that started the engine did not wait for it (its callers, Ray Data's actors,
    start meanwhile): the first row of each caller waits here until it is up."""
    warm_engine.wait_until_serving(engine_start)
    return _serve_request(row, **kwargs)


def _serve_request(row: Dict[str, Any], **kwargs) -> Dict[str, Any]:
    """The shared engine's request: the row's messages (or prompt) and sampling settings go to
    runner.engine_server as one plain dict; the row's own columns stay in the row."""
    request = _preprocess(row, **kwargs)
    body = {k: request.pop(k) for k in _REQUEST_FIELDS if k in request}
    return {**request, "method": engine_server.METHOD, "request_kwargs": body}


class _RefuseVllm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "vllm" or name.startswith("vllm."):
            raise ModuleNotFoundError(f"{name} is kept out of the driver while the processor is built", name=name)
        return None


@contextlib.contextmanager
def _vllm_kept_off_driver():
    """Ray Data LLM imports all of vLLM on the driver while building the processor, only to
    fill a tuple of exception types that the engine actors use (each actor imports vLLM
    itself). That import sits on the critical path before any actor starts: 3 s on a 2-core
    CPU beyond the torch and transformers the build imports anyway, 7-23 s on the H100
    machines. Ray guards it with `except ImportError`, so refusing it is safe; where vLLM is
    already loaded nothing changes."""
    if "vllm" in sys.modules:
        yield
        return
    finder = _RefuseVllm()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def processor_config(cfg: RunConfig, location: ModelLocation, env: Dict[str, str]):
    """Ray Data LLM's processor settings from the hw, processor, engine and errors groups."""
    from ray.data.llm import vLLMEngineProcessorConfig

    hw, proc = cfg.hw, cfg.processor
    light = {"num_cpus": proc.light_stage_num_cpus}
    if hw.gpus_per_replica:
        bundles = [{"GPU": 1, "CPU": 1}] * hw.gpus_per_replica
    else:
        bundles = [{"CPU": hw.cpus_per_replica}]
    config_kwargs: Dict[str, Any] = dict(
        model_source=location.source,
        engine_kwargs=engine_kwargs(cfg, location),
        runtime_env={"env_vars": env},
        batch_size=proc.batch_size,
        # A bare int n makes Ray Data LLM autoscale the engine pool from 1 to n, and on
        # two H200s the second replica never started in a 2,000-row job: n replicas
        # asked for are n replicas started.
        concurrency=(proc.concurrency, proc.concurrency),
        accelerator_type=hw.accelerator_type,
        placement_group_config={"bundles": bundles},
        # Engine metrics go to Ray's Prometheus exporter, which needs ray[serve]'s packages.
        log_engine_metrics=False,
        # A row the engine rejects (e.g. a prompt longer than the context) becomes a
        # failed row instead of stopping the run, unless the run is set to fail fast.
        should_continue_on_error=cfg.errors.on_row_error == OnRowError["continue"],
        chat_template_stage={"enabled": cfg.prompt.chat_template, **light},
        tokenize_stage={"enabled": proc.tokenize_stage, **light},
        detokenize_stage={"enabled": proc.detokenize_stage, **light},
    )
    if proc.max_concurrent_batches:
        config_kwargs["max_concurrent_batches"] = proc.max_concurrent_batches
    return vLLMEngineProcessorConfig(**config_kwargs)


def serve_processor_config(cfg: RunConfig, app: str):
    """Ray Data LLM's processor that sends rows to the shared engine (runner.warm_engine)."""
    from ray.data.llm import ServeDeploymentProcessorConfig

    return ServeDeploymentProcessorConfig(
        deployment_name=warm_engine.DEPLOYMENT,
        app_name=app,
        # Sizes the callers' batches only: the engine's own scheduling was fixed when it started.
        batch_size=cfg.processor.batch_size,
        # One caller actor per engine replica; Serve spreads each caller's requests over them.
        concurrency=cfg.processor.concurrency,
        should_continue_on_error=cfg.errors.on_row_error == OnRowError["continue"],
    )


def _size_callers(cfg: RunConfig, stage, light: Dict[str, float]) -> None:
    """The shared engine's callers only await its answers: a light stage's share of a CPU, not
    a whole one. Each works on as many blocks at once as keep the engine full
    (runner.batches_in_flight), or processor.max_concurrent_batches of them where it is set,
    as that bounds the blocks a job's own engine takes at once."""
    from ray.data import ActorPoolStrategy

    stage.map_batches_kwargs.update(light)
    most = cfg.processor.max_concurrent_batches
    if most:
        replicas = cfg.processor.concurrency
        stage.map_batches_kwargs["compute"] = ActorPoolStrategy(size=replicas, max_tasks_in_flight_per_actor=most)
    blocks = batches_in_flight.blocks_per_caller(cfg)
    if blocks > 1:
        stage.map_batches_kwargs["max_concurrency"] = blocks


def build_processor(cfg: RunConfig, location: ModelLocation, env: Dict[str, str], original_columns: List[str],
                    engine_start: Optional[warm_engine.EngineStart] = None):
    """The rows' way to an engine: this job's own (vLLMEngineProcessorConfig), or, with
    `engine_start`, the shared engine's Serve application."""
    from ray.data.llm import build_processor as build

    light = {"num_cpus": cfg.processor.light_stage_num_cpus}
    prompt_cfg = structured.resolved(cfg.prompt)
    row_outputs = outputs.from_config(cfg)
    request = functools.partial(_serve_request_once_up, engine_start=engine_start) if engine_start else _preprocess
    preprocess = functools.partial(
        request, prompt_cfg=prompt_cfg, columns=prompt.column_map(prompt_cfg),
        id_column=readers.id_column(cfg.dataset), fail_fast=cfg.errors.on_row_error == OnRowError.fail,
    )
    # No processor-level postprocess: Ray Data LLM hands it only the rows that succeeded,
    # and every row, failed ones included, must be shaped and accounted for.
    with _vllm_kept_off_driver():
        config = serve_processor_config(cfg, engine_start.app) if engine_start else processor_config(cfg, location, env)
        processor = build(config, preprocess=preprocess, preprocess_map_kwargs=light)
    if engine_start:
        _size_callers(cfg, processor.get_stage_by_name("ServeDeploymentStage"), light)
    postprocess = functools.partial(
        _postprocess, original_columns=original_columns, row_outputs=row_outputs,
        id_column=readers.id_column(cfg.dataset), fail_fast=cfg.errors.on_row_error == OnRowError.fail,
    )
    if not row_outputs.columns():
        return lambda dataset: processor(dataset).map(postprocess, **light)
    # Fused with the map into one task: no extra actor, no extra pass over the data.
    return lambda dataset: processor(dataset).map(postprocess, **light).map_batches(
        row_outputs.typed, batch_format="pyarrow", batch_size=None, **light
    )


def _python_sigterm_handler_back() -> None:
    """Ray's C++ core installs its own SIGTERM handler, which logs and aborts the process
    (exit -6, no cleanup, no resume line): seen once a sweep's shared engine and its Serve
    handles were set up. Setting the Python handler again puts the job's own back in front."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    handler = signal.getsignal(signal.SIGTERM)
    if handler is not None:
        signal.signal(signal.SIGTERM, handler)


def stop_ray(grace_s: float = 15.0) -> List[int]:
    """Shut Ray down and make sure nothing it started lives on; returns the pids killed.

    Engine processes outlive `ray.shutdown()` by tens of seconds, holding a core: the next
    job of a sweep would be measured against them, and Ctrl-C would leave them behind.
    Everything a local Ray starts descends from this process, so those are waited for and,
    after the grace period, killed. A joined cluster's processes are not ours: there the
    run's own actors are ended and the driver disconnects (runner.cluster.disconnect).
    """
    import psutil
    import ray

    if cluster.current() is not None:
        cluster.disconnect(grace_s=max(grace_s, 30.0))
        return []
    descendants = psutil.Process().children(recursive=True)
    ray.shutdown()
    alive = processes.end(descendants, grace_s)
    if alive:
        log.info("killed %d process(es) left after Ray shut down", len(alive))
    return [p.pid for p in alive]


def run(cfg: RunConfig, model: ModelLocation, location: Location, reader, scan, done_ids, partly_done=None) -> PipelineRun:
    """Run every input row not in done_ids (with prompt.n samples: each sample not in
    partly_done's {id: sample indexes}) and write the results under `location`.

    Which rows are done is read from the results themselves (runner.run_state), so no Ray
    Data checkpoint is kept: a checkpoint written after the results could lag them, and
    one deleted at the end could make a resume run everything again.
    """
    from ray.exceptions import GetTimeoutError

    started_at = time.time()
    env = worker_env(cfg)
    shared = warm_engine.wanted(cfg)
    if shared:
        _restart_if_ray_settings_changed(cfg, env)
    elif warm_engine.current() is not None:
        warm_engine.shutdown()  # this job runs its own engine, and ends its Ray with it
    start_ray(cfg, env)
    marks = {"ray_started": time.time()}
    if cluster.current() is not None:
        env = cluster.without_job_env(env)
    # Until it says otherwise, a job leaving here was interrupted (Ctrl-C, SIGTERM).
    ended = "interrupted"
    try:
        configure_data_context(cfg)
        faults.reached("ray_started")
        if shared:
            spec = warm_engine.spec(cfg, model, env, engine_kwargs(cfg, model))
            engine = warm_engine.acquire(cfg, spec)
            engine_start = warm_engine.current().start
            _python_sigterm_handler_back()
        else:
            engine, engine_start = {"id": uuid.uuid4().hex[:8], "mode": "per_job", "started": True}, None
        light_cpus = cfg.processor.light_stage_num_cpus
        dataset = reader.ray_dataset(scan, done_ids, **cluster.read_args(reader, light_cpus))
        if cfg.processor.concurrency > 1:
            dataset = _one_batch_per_block(dataset, cfg.processor.batch_size, light_cpus)
        original_columns = [name for name in scan.schema.names if name != readers.INPUT_ERROR_COLUMN]
        n = cfg.prompt.n
        if n > 1:
            expand = functools.partial(samples.expand, n=n, id_column=scan.id_column, partial=partly_done or {})
            dataset = dataset.flat_map(expand, num_cpus=light_cpus)
            original_columns.append(samples.SAMPLE_COLUMN)
        marks["dataset_ready"] = time.time()
        processor = build_processor(cfg, model, env, original_columns, engine_start)
        _python_sigterm_handler_back()
        marks["processor_built"] = time.time()
        out = processor(dataset)
        results = location.child(run_state.RESULTS)
        try:
            with _kill_point_after_results(results):
                if cfg.output.format == OutputFormat.jsonl:
                    out.write_json(results.path, filesystem=results.fs)
                else:
                    out.write_parquet(results.path, filesystem=results.fs)
        except GetTimeoutError:
            # Ray Data's wait for its actors (configure_data_context), the engine's among them.
            raise EngineNotReady(
                f"the run's actors did not start within ray.engine_start_timeout_s={cfg.ray.engine_start_timeout_s} s: "
                f"{cluster.unplaced_engines(cfg)}"
            ) from None
        ended = "finished"
        return PipelineRun(results_dir=results, started_at=started_at, finished_at=time.time(), marks=marks, engine=engine)
    except Exception:
        ended = "failed"  # a sweep goes on to its next job
        if shared:
            engine_failure = warm_engine.start_failure()
            if warm_engine.kept_between_jobs():
                warm_engine.check_after_failure()
            if engine_failure is not None:
                raise engine_failure from None
        raise
    finally:
        if not shared:
            stop_ray()
        elif ended == "interrupted" or not warm_engine.kept_between_jobs():
            # Ctrl-C, SIGTERM, or a job outside a sweep: nothing may stay running.
            warm_engine.shutdown(graceful=ended != "interrupted")


_ray_settings: Optional[str] = None


def _restart_if_ray_settings_changed(cfg: RunConfig, env: Dict[str, str]) -> None:
    """A sweep's jobs share one local Ray; one whose Ray settings differ gets a fresh one."""
    import ray

    global _ray_settings
    wanted = repr((cfg.ray.num_cpus, cfg.ray.dashboard, sorted(env.items())))
    if ray.is_initialized() and _ray_settings != wanted:
        log.info("this job's Ray settings differ from the running Ray's: restarting it")
        warm_engine.shutdown()
    _ray_settings = wanted


def _one_batch_per_block(dataset, rows: int, num_cpus: float):
    """The rows re-cut into blocks of one batch, as they stream (no barrier).

    A read block (a chunk, up to ~1,000 rows) goes to one replica whole and its batches run
    there one after another: 32 rows in one chunk kept the second replica idle. Ray Data
    gives this step no way to set its CPUs and asks a whole one, which never fit beside CPU
    replicas sized to their nodes (the run waited forever); it gets the light stages' share.
    """
    split = dataset.repartition(target_num_rows_per_block=rows)
    op = getattr(getattr(split, "_logical_plan", None), "dag", None)
    if isinstance(getattr(op, "ray_remote_args", None), dict):
        op.ray_remote_args["num_cpus"] = num_cpus
    return split


@contextlib.contextmanager
def _kill_point_after_results(results: Location):
    """Lets a test kill the run once n result files exist (RUNNER_KILL_AT=results_written:n)."""
    wanted = os.environ.get(faults.KILL_AT_ENV, "")
    if not wanted.startswith("results_written"):
        yield
        return
    stop = threading.Event()

    def watch():
        while not stop.wait(0.2):
            faults.reached("results_written", count=len(results.list_files()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
