"""Checks that run before Ray or vLLM start: each problem names the field and the fix."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, List, Mapping

from runner import data, models, prompt

OUTPUT_FORMATS = ("parquet", "jsonl")


class PreflightError(Exception):
    def __init__(self, problems: List[str]):
        self.problems = problems
        super().__init__("\n".join(f"  - {p}" for p in problems))

    def __str__(self) -> str:
        return "the run cannot start:\n" + "\n".join(f"  - {p}" for p in self.problems)


def local_gpu_count() -> int:
    """GPUs this machine has, without importing a CUDA framework."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
            return sum(1 for line in listing.splitlines() if line.startswith("GPU "))
        except (OSError, subprocess.SubprocessError):
            return 0
    return 0


def check_hardware(cfg: Mapping[str, Any]) -> List[str]:
    hw, engine, ray_cfg = cfg["hw"], cfg["engine"], cfg["ray"]
    problems = []
    parallel = int(engine["tensor_parallel_size"]) * int(engine["pipeline_parallel_size"])
    if hw["gpus_per_replica"] and parallel != hw["gpus_per_replica"]:
        problems.append(
            f"hw.gpus_per_replica={hw['gpus_per_replica']} but engine.tensor_parallel_size x "
            f"engine.pipeline_parallel_size = {parallel}. Fix: make them equal"
        )
    if not hw["gpus_per_replica"] and parallel != 1:
        problems.append("engine.tensor_parallel_size/pipeline_parallel_size > 1 need GPUs. Fix: pick a multi-GPU hw option")
    if hw["gpus_per_replica"] and not ray_cfg.get("address"):
        have = local_gpu_count()
        need = int(hw["gpus_per_replica"])
        if have < need:
            problems.append(
                f"hw={hw['name']} asks for {need} GPU(s) per replica ({hw['accelerator_type']}), but this machine has "
                f"{have}. Fix: hw=cpu here, or run on a machine with such GPUs, or join a Ray cluster that has them "
                "with ray.address=<address>"
            )
    return problems


def check_prompt_and_data(cfg: Mapping[str, Any]) -> List[str]:
    problems = []
    try:
        columns = data.peek_columns(cfg["dataset"])
    except data.DatasetError as error:
        return [str(error)]
    try:
        wanted = prompt.column_map(cfg["prompt"])
    except ValueError as error:
        return [str(error)]
    if columns is None:
        return problems
    for placeholder, column in wanted.items():
        if column not in columns:
            problems.append(
                f"prompt.user reads {{{placeholder}}} from column '{column}', which dataset={cfg['dataset']['name']} "
                f"lacks (columns: {', '.join(columns)}). Fix: prompt.columns.{placeholder}=<one of those columns>"
            )
    id_column = cfg["dataset"]["id_column"]
    if id_column not in columns:
        problems.append(
            f"dataset.id_column={id_column!r} is not a column of dataset={cfg['dataset']['name']} "
            f"(columns: {', '.join(columns)}). Fix: dataset.id_column=<a column that identifies each row>"
        )
    return problems


def check_limits(cfg: Mapping[str, Any]) -> List[str]:
    problems = []
    max_model_len = cfg["engine"]["max_model_len"] or cfg["model"]["context_length"]
    if cfg["prompt"]["max_tokens"] >= max_model_len:
        problems.append(
            f"prompt.max_tokens={cfg['prompt']['max_tokens']} leaves no room for the prompt in "
            f"max_model_len={max_model_len}. Fix: lower prompt.max_tokens or raise engine.max_model_len"
        )
    if cfg["output"]["format"] not in OUTPUT_FORMATS:
        problems.append(f"output.format={cfg['output']['format']!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    if cfg["processor"]["batch_size"] < 1 or cfg["processor"]["concurrency"] < 1:
        problems.append("processor.batch_size and processor.concurrency must be at least 1")
    return problems


def run_checks(cfg: Mapping[str, Any]) -> None:
    problems = check_hardware(cfg) + check_limits(cfg) + check_prompt_and_data(cfg) + models.check(cfg["model"])
    if problems:
        raise PreflightError(problems)
