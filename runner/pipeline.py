"""The Ray Data LLM pipeline: read rows -> prompt -> vLLM engine -> shape -> write.

The only module that touches Ray. Results stream from the engine to files in the run
folder; nothing is collected into the driver.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from runner import data, prompt, results
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
    elif cfg["ray"].get("num_cpus"):
        kwargs["num_cpus"] = int(cfg["ray"]["num_cpus"])
    ray.init(**kwargs)


def _preprocess(row: Dict[str, Any], prompt_cfg: Dict[str, Any], columns: Dict[str, str]) -> Dict[str, Any]:
    return {**row, **prompt.build_request(row, prompt_cfg, columns)}


def _postprocess(row: Dict[str, Any], original_columns: List[str]) -> Dict[str, Any]:
    return results.shape_result(row, original_columns)


def build_processor(cfg: Mapping[str, Any], location: ModelLocation, env: Dict[str, str], original_columns: List[str]):
    from ray.data.llm import build_processor as build, vLLMEngineProcessorConfig

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
        concurrency=int(proc["concurrency"]),
        accelerator_type=hw["accelerator_type"],
        placement_group_config={"bundles": bundles},
        # Engine metrics go to Ray's Prometheus exporter, which needs ray[serve]'s packages.
        log_engine_metrics=False,
        chat_template_stage={"enabled": bool(cfg["prompt"]["chat_template"]), **light},
        tokenize_stage={"enabled": bool(proc["tokenize_stage"]), **light},
        detokenize_stage={"enabled": bool(proc["detokenize_stage"]), **light},
    )
    if proc.get("max_concurrent_batches"):
        config_kwargs["max_concurrent_batches"] = int(proc["max_concurrent_batches"])
    prompt_cfg = dict(cfg["prompt"])
    return build(
        vLLMEngineProcessorConfig(**config_kwargs),
        preprocess=functools.partial(_preprocess, prompt_cfg=prompt_cfg, columns=prompt.column_map(prompt_cfg)),
        postprocess=functools.partial(_postprocess, original_columns=original_columns),
        preprocess_map_kwargs=light,
        postprocess_map_kwargs=light,
    )


def run(cfg: Mapping[str, Any], location: ModelLocation, run_dir: Path, hub_token: Optional[str]) -> PipelineRun:
    import ray

    started_at = time.time()
    env = worker_env(cfg, hub_token)
    start_ray(cfg, env)
    try:
        dataset = data.read(cfg["dataset"], hub_token)
        original_columns = list(dataset.schema().names)
        processor = build_processor(cfg, location, env, original_columns)
        out = processor(dataset)
        results_dir = run_dir / "results"
        if cfg["output"]["format"] == "jsonl":
            out.write_json(str(results_dir))
        else:
            out.write_parquet(str(results_dir))
        return PipelineRun(results_dir=results_dir, started_at=started_at, finished_at=time.time())
    finally:
        ray.shutdown()
