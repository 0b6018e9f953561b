"""Checks that run before Ray or vLLM start: each problem names the field and the fix."""

from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional

from runner import gpus, models, prompt, readers, run_state, storage
from runner.storage import Location

OUTPUT_FORMATS = ("parquet", "jsonl")


class PreflightError(Exception):
    def __init__(self, problems: List[str]):
        self.problems = problems
        super().__init__("\n".join(f"  - {p}" for p in problems))

    def __str__(self) -> str:
        return "the run cannot start:\n" + "\n".join(f"  - {p}" for p in self.problems)


def local_gpu_names() -> List[str]:
    """Names of the GPUs this process may use (CUDA_VISIBLE_DEVICES applied)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return []
    by_index = {row[0]: row[1] for row in gpus.query("index,name") if len(row) == 2 and row[0].isdigit()}
    wanted = [i.strip() for i in (visible or "").split(",") if i.strip()]
    if wanted and all(i in by_index for i in wanted):
        return [by_index[i] for i in wanted]
    return list(by_index.values())


def ray_accelerator_type(gpu_name: str) -> Optional[str]:
    """The accelerator_type label Ray gives a GPU of this name (e.g. "NVIDIA H200" -> H200)."""
    try:
        from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

        return NvidiaGPUAcceleratorManager._gpu_name_to_accelerator_type(gpu_name)
    except (ImportError, AttributeError):  # a Ray without that helper: the check is skipped
        return None


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
        problems += _local_gpu_problems(hw, int(cfg["processor"]["concurrency"]), local_gpu_names())
    return problems


def _local_gpu_problems(hw: Mapping[str, Any], replicas: int, gpu_names: List[str]) -> List[str]:
    """A local Ray that lacks the GPUs, or GPUs of the type, that the engine asks for would
    wait for them forever instead of failing."""
    have, per_replica = len(gpu_names), int(hw["gpus_per_replica"])
    if have < per_replica:
        return [
            f"hw={hw['name']} asks for {per_replica} GPU(s) per replica ({hw['accelerator_type']}), but this machine has "
            f"{have}. Fix: hw=cpu here, or run on a machine with such GPUs, or join a Ray cluster that has them "
            "with ray.address=<address>"
        ]
    problems = []
    if have < per_replica * replicas:
        problems.append(
            f"processor.concurrency={replicas} replicas x hw.gpus_per_replica={per_replica} need {per_replica * replicas} "
            f"GPUs, but this machine has {have}. Fix: processor.concurrency={have // per_replica}"
        )
    labels = sorted({label for label in map(ray_accelerator_type, gpu_names) if label})
    wanted = hw["accelerator_type"]
    if wanted and labels and wanted not in labels:
        problems.append(
            f"hw.accelerator_type={wanted} (hw={hw['name']}), but this machine's GPUs are {', '.join(labels)} "
            f"({gpu_names[0]}), so Ray would never place the engine. Fix: hw.accelerator_type={labels[0]}, "
            "or hw.accelerator_type=null for any GPU"
        )
    return problems


def check_prompt_and_data(cfg: Mapping[str, Any], columns: Optional[List[str]]) -> List[str]:
    problems = []
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
    id_column = cfg["dataset"].get("id_column")
    if id_column and id_column not in columns:
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


def check_run_location(location: Location, resume: bool) -> List[str]:
    """The run's location can be written, and holds a run exactly when resuming one."""
    problem = storage.probe_writable(location)
    if problem:
        return [f"output.uri: {problem}. Fix: check the bucket or folder and its credentials (AWS_* / GOOGLE_* in the environment)"]
    try:
        has_manifest = location.child(run_state.MANIFEST).exists()
        has_results = bool(location.child(run_state.RESULTS).list_files())
    except OSError as error:
        return [f"output.uri: {location} cannot be listed ({error})"]
    if resume and not has_manifest:
        return [f"{location} holds no {run_state.MANIFEST}, so it is not a run this runner can resume. Fix: give the run's location (outputs/runs/<date_time>, or <output.uri>/runs/<date_time>)"]
    if not resume and (has_manifest or has_results):
        return [f"{location} already holds a run. Fix: resume it with python -m runner.resume {location}, or pick another hydra.run.dir / output.uri"]
    return []


def run_checks(cfg: Mapping[str, Any], location: Optional[Location] = None, resume: bool = False):
    """Raise PreflightError listing every problem; return the dataset's reader. The run's
    location is checked when given."""
    problems = check_hardware(cfg) + check_limits(cfg) + models.check(cfg["model"])
    if location is not None:
        problems += check_run_location(location, resume)
    reader = None
    try:
        reader = readers.for_dataset(cfg["dataset"], text_columns=prompt.column_map(cfg["prompt"]).values())
        problems += check_prompt_and_data(cfg, reader.columns())
    except readers.DatasetError as error:
        problems.append(str(error))
    except OSError as error:  # storage: a missing bucket, refused credentials, no network
        problems.append(
            f"dataset.path={cfg['dataset'].get('path')!r} cannot be read ({type(error).__name__}: {error}). "
            "Fix: check the path, and for object storage that its credentials are in the environment"
        )
    if problems:
        raise PreflightError(problems)
    return reader


# Room for what a chat template adds around the messages (role markers, special tokens).
CHAT_TEMPLATE_MARGIN_TOKENS = 64


def _byte_bound(rows, prompt_cfg: Mapping[str, Any], columns: Mapping[str, str]) -> int:
    """An upper bound on any row's prompt tokens, without a tokenizer: a byte-level BPE or
    byte-fallback token covers at least one byte, so a prompt has at most as many tokens as
    UTF-8 bytes (plus the template's own tokens)."""
    longest = 0
    for row in rows:
        try:
            request = prompt.build_request(row, prompt_cfg, columns)
        except prompt.PromptInputError:
            continue
        texts = [m["content"] for m in request.get("messages", [])] or [request.get("prompt", "")]
        longest = max(longest, sum(len(t.encode("utf-8")) for t in texts))
    return longest + CHAT_TEMPLATE_MARGIN_TOKENS


def check_prompt_lengths(cfg: Mapping[str, Any], tokenizer_source: str, rows: List[dict]) -> Optional[str]:
    """Tokenize the first rows' prompts as the engine will see them; describe any that cannot fit.

    Returns None when all fit or when no tokenizer is available offline.
    """
    if not rows:
        return None
    prompt_cfg = cfg["prompt"]
    columns = prompt.column_map(prompt_cfg)
    max_model_len = cfg["engine"]["max_model_len"] or cfg["model"]["context_length"]
    max_tokens = int(prompt_cfg["max_tokens"])
    if _byte_bound(rows, prompt_cfg, columns) + max_tokens <= max_model_len:
        return None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, local_files_only=True)
    except Exception:  # noqa: BLE001 - the engine will load it; this check is best effort
        return None
    over, longest = 0, 0
    for row in rows:
        try:
            request = prompt.build_request(row, prompt_cfg, columns)
        except prompt.PromptInputError:
            continue  # reported per row as a failed row, or stops a fail-fast run
        if "messages" in request:
            ids = tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
        else:
            ids = tokenizer(request["prompt"])["input_ids"]
        longest = max(longest, len(ids))
        over += len(ids) + max_tokens > max_model_len
    if not over:
        return None
    return (
        f"{over} of the first {len(rows)} rows need more than max_model_len={max_model_len} tokens "
        f"(longest prompt {longest} tokens + prompt.max_tokens={max_tokens}). Fix: engine.max_model_len={longest + max_tokens} "
        f"(the model allows {cfg['model']['context_length']}), or lower prompt.max_tokens, or shorten the inputs; "
        "with errors.on_row_error=continue, prompts longer than the context go to failed/ and the rest run"
    )
