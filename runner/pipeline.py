"""The Ray Data LLM pipeline: read rows -> prompt -> vLLM engine -> shape -> write.

The only module that touches Ray. Results stream from the engine to files in the run
folder; nothing is collected into the driver.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from runner import data, outputs, preflight, prompt, results, structured
from runner.models import ModelLocation

log = logging.getLogger(__name__)


@dataclass
class PipelineRun:
    results_dir: Path
    started_at: float  # wall clock, before Ray starts
    finished_at: float  # wall clock, after the last file is written


def engine_kwargs(cfg: Mapping[str, Any], location: ModelLocation) -> Dict[str, Any]:
    """vLLM EngineArgs from the engine group, unset ones left to vLLM."""
    engine = dict(cfg["engine"])
    extra = dict(engine.pop("extra") or {})
    kwargs = {k: v for k, v in engine.items() if v is not None}
    kwargs.update(extra)
    if location.load_format:
        kwargs["load_format"] = location.load_format
    if cfg["model"].get("revision"):
        kwargs["revision"] = cfg["model"]["revision"]
    if cfg["model"].get("tokenizer"):
        kwargs["tokenizer"] = cfg["model"]["tokenizer"]
    if cfg["model"].get("trust_remote_code"):
        kwargs["trust_remote_code"] = True
    return kwargs


def worker_env(cfg: Mapping[str, Any], hub_token: Optional[str]) -> Dict[str, str]:
    env = {str(k): str(v) for k, v in (cfg["hw"]["env"] or {}).items()}
    if hub_token:
        # Handed to the workers through Ray, never through the run config.
        env["HF_TOKEN"] = hub_token
    return env


def start_ray(cfg: Mapping[str, Any], env: Dict[str, str]) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: Dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": True}
    if cfg["ray"].get("address"):
        kwargs["address"] = cfg["ray"]["address"]
    else:
        # The dashboard's processes start beside the engine and take CPU it needs to start.
        kwargs["include_dashboard"] = bool(cfg["ray"]["dashboard"])
        if cfg["ray"].get("num_cpus"):
            kwargs["num_cpus"] = int(cfg["ray"]["num_cpus"])
    ray.init(**kwargs)


ROW_ERROR = "__runner_error__"


def _placeholder_request(prompt_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """What a row that cannot become a prompt sends to the engine: one token of work, so the
    row still flows through the single streaming pass and is accounted for at the end.
    Same fields and types as a real request, since rows share one Arrow schema per block."""
    request: Dict[str, Any] = {"sampling_params": {**prompt.sampling_params(prompt_cfg), "max_tokens": 1}}
    if prompt_cfg["chat_template"]:
        request["messages"] = [{"role": "user", "content": "."}]
    else:
        request["prompt"] = "."
    return request


def _preprocess(row: Dict[str, Any], prompt_cfg: Dict[str, Any], columns: Dict[str, str], id_column: str, fail_fast: bool) -> Dict[str, Any]:
    try:
        return {**row, **prompt.build_request(row, prompt_cfg, columns), ROW_ERROR: ""}
    except prompt.PromptInputError as error:
        reason = f"row {id_column}={row.get(id_column)!r}: {error}"
        if fail_fast:
            raise prompt.PromptInputError(f"{reason}. Fix the data, or set errors.on_row_error=continue") from None
        return {**row, **_placeholder_request(prompt_cfg), ROW_ERROR: str(error)}


def _postprocess(row: Dict[str, Any], original_columns: List[str], row_outputs: outputs.RowOutputs, id_column: str, fail_fast: bool) -> Dict[str, Any]:
    error = row.get(ROW_ERROR) or row.get("__inference_error__") or ""
    out = results.shape_result(row, original_columns, error=error)
    row_outputs.apply(out, row)
    if fail_fast and out[results.ERROR_COLUMN] and not error:
        raise ValueError(f"row {id_column}={row.get(id_column)!r}: {out[results.ERROR_COLUMN]}. Or set errors.on_row_error=continue")
    return out


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


def processor_config(cfg: Mapping[str, Any], location: ModelLocation, env: Dict[str, str]):
    """Ray Data LLM's processor settings from the hw, processor, engine and errors groups."""
    from ray.data.llm import vLLMEngineProcessorConfig

    hw, proc = cfg["hw"], cfg["processor"]
    light = {"num_cpus": float(proc["light_stage_num_cpus"])}
    if hw["gpus_per_replica"]:
        bundles = [{"GPU": 1, "CPU": 1}] * int(hw["gpus_per_replica"])
    else:
        bundles = [{"CPU": float(hw["cpus_per_replica"])}]
    config_kwargs: Dict[str, Any] = dict(
        model_source=location.source,
        engine_kwargs=engine_kwargs(cfg, location),
        runtime_env={"env_vars": env},
        batch_size=int(proc["batch_size"]),
        # A bare int n makes Ray Data LLM autoscale the engine pool from 1 to n, and on
        # two H200s the second replica never started in a 2,000-row job: n replicas
        # asked for are n replicas started.
        concurrency=(int(proc["concurrency"]), int(proc["concurrency"])),
        accelerator_type=hw["accelerator_type"],
        placement_group_config={"bundles": bundles},
        # Engine metrics go to Ray's Prometheus exporter, which needs ray[serve]'s packages.
        log_engine_metrics=False,
        # A row the engine rejects (e.g. a prompt longer than the context) becomes a
        # failed row instead of stopping the run, unless the run is set to fail fast.
        should_continue_on_error=cfg["errors"]["on_row_error"] == "continue",
        chat_template_stage={"enabled": bool(cfg["prompt"]["chat_template"]), **light},
        tokenize_stage={"enabled": bool(proc["tokenize_stage"]), **light},
        detokenize_stage={"enabled": bool(proc["detokenize_stage"]), **light},
    )
    if proc.get("max_concurrent_batches"):
        config_kwargs["max_concurrent_batches"] = int(proc["max_concurrent_batches"])
    return vLLMEngineProcessorConfig(**config_kwargs)


def build_processor(cfg: Mapping[str, Any], location: ModelLocation, env: Dict[str, str], original_columns: List[str]):
    from ray.data.llm import build_processor as build

    light = {"num_cpus": float(cfg["processor"]["light_stage_num_cpus"])}
    prompt_cfg = structured.resolved(cfg["prompt"])
    row_outputs = outputs.from_config(cfg)
    problems = row_outputs.column_problems(original_columns, cfg["dataset"]["name"])
    if problems:
        raise preflight.PreflightError(problems)
    preprocess = functools.partial(
        _preprocess, prompt_cfg=prompt_cfg, columns=prompt.column_map(prompt_cfg),
        id_column=cfg["dataset"]["id_column"], fail_fast=cfg["errors"]["on_row_error"] == "fail",
    )
    # No processor-level postprocess: Ray Data LLM hands it only the rows that succeeded,
    # and every row, failed ones included, must be shaped and accounted for.
    with _vllm_kept_off_driver():
        processor = build(processor_config(cfg, location, env), preprocess=preprocess, preprocess_map_kwargs=light)
    postprocess = functools.partial(
        _postprocess, original_columns=original_columns, row_outputs=row_outputs,
        id_column=cfg["dataset"]["id_column"], fail_fast=cfg["errors"]["on_row_error"] == "fail",
    )
    if not row_outputs.columns():
        return lambda dataset: processor(dataset).map(postprocess, **light)
    # Fused with the map into one task: no extra actor, no extra pass over the data.
    return lambda dataset: processor(dataset).map(postprocess, **light).map_batches(
        row_outputs.typed, batch_format="pyarrow", batch_size=None, **light
    )


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoint"


def set_checkpoint(cfg: Mapping[str, Any], run_dir: Path) -> None:
    """Record finished row ids as results are written, so a killed run resumes where it was.

    Ray Data skips ids it finds in the checkpoint when the same run folder is run again,
    and deletes the checkpoint once the whole dataset is written. The setting is
    process-wide, so each job of a sweep sets (or clears) its own.
    """
    from ray.data import DataContext
    from ray.data.checkpoint import CheckpointConfig

    context = DataContext.get_current()
    if cfg["dataset"]["source"] == "hub":
        # Ray Data checkpoints pipelines that start with a file read; a hub dataset is
        # materialized by `datasets` first. Save it as parquet and use dataset=parquet to resume.
        log.warning("dataset.source=hub: this run cannot be resumed if killed")
        context.checkpoint_config = None
        return
    context.checkpoint_config = CheckpointConfig(
        id_column=cfg["dataset"]["id_column"], checkpoint_path=str(checkpoint_dir(run_dir).resolve())
    )


def stop_ray(grace_s: float = 15.0) -> List[int]:
    """Shut Ray down and make sure nothing it started lives on; returns the pids killed.

    Engine processes outlive `ray.shutdown()` by tens of seconds, holding a core: the next
    job of a sweep would be measured against them, and Ctrl-C would leave them behind.
    Everything a local Ray starts descends from this process, so those are waited for and,
    after the grace period, killed.
    """
    import psutil
    import ray

    descendants = psutil.Process().children(recursive=True)
    ray.shutdown()
    _, alive = psutil.wait_procs(descendants, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    if alive:
        log.info("killed %d process(es) left after Ray shut down", len(alive))
    return [p.pid for p in alive]


def run(
    cfg: Mapping[str, Any],
    location: ModelLocation,
    run_dir: Path,
    hub_token: Optional[str],
    original_columns: Optional[List[str]] = None,
) -> PipelineRun:
    started_at = time.time()
    env = worker_env(cfg, hub_token)
    start_ray(cfg, env)
    try:
        set_checkpoint(cfg, run_dir)
        dataset = data.read(cfg["dataset"], hub_token)
        original_columns = original_columns or list(dataset.schema().names)
        processor = build_processor(cfg, location, env, original_columns)
        out = processor(dataset)
        results_dir = run_dir / "results"
        if cfg["output"]["format"] == "jsonl":
            out.write_json(str(results_dir))
        else:
            out.write_parquet(str(results_dir))
        return PipelineRun(results_dir=results_dir, started_at=started_at, finished_at=time.time())
    finally:
        stop_ray()
