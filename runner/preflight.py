"""Checks that run before Ray or vLLM start: each problem names the field and the fix."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, List, Mapping, Optional

from runner import cluster, gpus, models, outputs, prompt, readers, redaction, run_state, schema, storage, warm_engine
from runner.errors import RunnerError
from runner.schema import DatasetSource, HardwareConfig, PromptConfig, RunConfig
from runner.storage import Location

class PreflightError(RunnerError):
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
    rows = [row for row in gpus.query("index,name,uuid") if len(row) == 3 and row[0].isdigit()]
    wanted = [i.strip() for i in (visible or "").split(",") if i.strip()]
    if not wanted or any(i.startswith("MIG-") for i in wanted):
        # A MIG slice is no row of --query-gpu: its type cannot be told here, so every GPU counts.
        return [name for _, name, _ in rows]
    names = []
    for entry in wanted:
        # As CUDA reads the list: an index, or a GPU's UUID or a unique prefix of it (schedulers
        # set UUIDs); the first entry that names no GPU ends the list.
        found = [name for index, name, uuid in rows if entry == index or (entry.startswith("GPU-") and uuid.startswith(entry))]
        if len(found) != 1:
            break
        names.append(found[0])
    return names


def ray_accelerator_type(gpu_name: str) -> Optional[str]:
    """The accelerator_type label Ray gives a GPU of this name (e.g. "NVIDIA H200" -> H200)."""
    try:
        from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

        return NvidiaGPUAcceleratorManager._gpu_name_to_accelerator_type(gpu_name)
    except (ImportError, AttributeError):  # a Ray without that helper: the check is skipped
        return None


def check_hardware(cfg: RunConfig) -> List[str]:
    hw, engine, ray_cfg = cfg.hw, cfg.engine, cfg.ray
    problems = []
    parallel = engine.tensor_parallel_size * engine.pipeline_parallel_size
    if hw.gpus_per_replica and parallel != hw.gpus_per_replica:
        problems.append(
            f"hw.gpus_per_replica={hw.gpus_per_replica} but engine.tensor_parallel_size x "
            f"engine.pipeline_parallel_size = {parallel}. Fix: make them equal"
        )
    if not hw.gpus_per_replica and parallel != 1:
        problems.append("engine.tensor_parallel_size/pipeline_parallel_size > 1 need GPUs. Fix: pick a multi-GPU hw option")
    # A cluster the run joins is checked once joined (runner.cluster.check).
    if hw.gpus_per_replica and not cluster.target(ray_cfg):
        problems += _local_gpu_problems(hw, cfg.processor.concurrency, local_gpu_names())
    return problems


def _local_gpu_problems(hw: HardwareConfig, replicas: int, gpu_names: List[str]) -> List[str]:
    """A local Ray that lacks the GPUs, or GPUs of the type, that the engine asks for would
    wait for them forever instead of failing."""
    have, per_replica = len(gpu_names), hw.gpus_per_replica
    if have < per_replica:
        return [
            f"hw={hw.name} asks for {per_replica} GPU(s) per replica ({hw.accelerator_type}), but this machine has "
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
    wanted = hw.accelerator_type
    if wanted and labels and wanted not in labels:
        problems.append(
            f"hw.accelerator_type={wanted} (hw={hw.name}), but this machine's GPUs are {', '.join(labels)} "
            f"({gpu_names[0]}), so Ray would never place the engine. Fix: hw.accelerator_type={labels[0]}, "
            "or hw.accelerator_type=null for any GPU"
        )
    return problems


def check_prompt_and_data(cfg: RunConfig, columns: Optional[List[str]]) -> List[str]:
    problems = []
    try:
        wanted = prompt.column_map(cfg.prompt)
    except ValueError as error:
        return [str(error)]
    if columns is None:
        return problems
    for placeholder, column in wanted.items():
        if column not in columns:
            problems.append(
                f"prompt.user reads {{{placeholder}}} from column '{column}', which dataset={cfg.dataset.name} "
                f"lacks (columns: {', '.join(columns)}). Fix: prompt.columns.{placeholder}=<one of those columns>"
            )
    id_column = cfg.dataset.id_column
    if id_column and id_column not in columns:
        problems.append(
            f"dataset.id_column={id_column!r} is not a column of dataset={cfg.dataset.name} "
            f"(columns: {', '.join(columns)}). Fix: dataset.id_column=<a column that identifies each row>"
        )
    return problems


def check_limits(cfg: RunConfig) -> List[str]:
    problems = []
    context = cfg.model.context_length
    max_model_len = cfg.engine.max_model_len or context
    if cfg.engine.max_model_len and context >= 1 and max_model_len > context:
        # vLLM refuses it too, but only once the engine has started (~95 s on CPU).
        problems.append(
            f"engine.max_model_len={max_model_len} is more than model.context_length={context} "
            f"(model={cfg.model.name}). Fix: engine.max_model_len={context} or less, or engine.max_model_len=null "
            "for the model's own"
        )
    elif max_model_len >= 1 and cfg.prompt.max_tokens >= max_model_len:
        room = "lower prompt.max_tokens" if max_model_len >= context else "lower prompt.max_tokens or raise engine.max_model_len"
        problems.append(
            f"prompt.max_tokens={cfg.prompt.max_tokens} leaves no room for the prompt in "
            f"max_model_len={max_model_len} (the model allows {context}). Fix: {room}"
        )
    return problems


def _at_least(low: float) -> Callable[[float], bool]:
    return lambda value: value >= low


def _above(low: float) -> Callable[[float], bool]:
    return lambda value: value > low


def _fraction(value: float) -> bool:
    return 0 < value <= 1


# Numeric settings with an obvious valid range: (key, test, the range in words). A value
# outside it would otherwise pass until the engine, or every row, fails minutes later.
SETTING_RANGES = [
    ("model.context_length", _at_least(1), "at least 1"),
    ("engine.max_model_len", _at_least(1), "at least 1"),
    ("engine.max_num_seqs", _at_least(1), "at least 1"),
    ("engine.max_num_batched_tokens", _at_least(1), "at least 1"),
    ("engine.gpu_memory_utilization", _fraction, "a fraction in (0, 1]"),
    ("engine.tensor_parallel_size", _at_least(1), "at least 1"),
    ("engine.pipeline_parallel_size", _at_least(1), "at least 1"),
    # vLLM seeds numpy with it, which takes 0 .. 2**32 - 1.
    ("engine.seed", lambda value: 0 <= value < 2**32, "in 0 .. 4294967295"),
    ("dataset.limit", _at_least(1), "at least 1"),
    ("prompt.max_tokens", _at_least(1), "at least 1"),
    ("prompt.n", _at_least(1), "at least 1"),
    ("prompt.temperature", _at_least(0), "at least 0 (0 is greedy)"),
    ("prompt.top_p", _fraction, "a fraction in (0, 1]"),
    ("hw.gpus_per_replica", _at_least(0), "at least 0 (0 runs the engine on CPUs)"),
    ("hw.cpus_per_replica", _above(0), "more than 0"),
    ("hw.price_per_hour", _at_least(0), "at least 0"),
    ("processor.batch_size", _at_least(1), "at least 1"),
    ("processor.concurrency", _at_least(1), "at least 1"),
    ("processor.max_concurrent_batches", _at_least(1), "at least 1"),
    ("processor.light_stage_num_cpus", _above(0), "more than 0"),
    ("processor.rows_per_file", _at_least(1), "at least 1"),
    ("ray.num_cpus", _at_least(1), "at least 1"),
    ("ray.engine_start_timeout_s", _at_least(1), "at least 1"),
    ("tracking.sample_rows", _at_least(0), "at least 0"),
    ("errors.length_check_rows", _at_least(0), "at least 0 (0 skips the check)"),
]
SYNTHETIC_RANGES = [
    ("dataset.num_rows", _at_least(1), "at least 1"),
    ("dataset.input_tokens", _at_least(1), "at least 1"),
]


def _schema_default(key: str) -> Any:
    """The schema's default for a dotted key, or MISSING."""
    node: Any = schema.RunConfig
    for part in key.split("."):
        found = {f.name: f for f in dataclasses.fields(node)}[part]
        if not dataclasses.is_dataclass(found.default_factory):
            return found.default
        node = found.default_factory
    return dataclasses.MISSING


def check_settings(cfg: RunConfig) -> List[str]:
    """Every numeric setting in its valid range, and no secret in hw.env."""
    problems = []
    ranges = SETTING_RANGES + (SYNTHETIC_RANGES if cfg.dataset.source == DatasetSource.synthetic else [])
    for key, valid, rule in ranges:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None or valid(value):
            continue
        default = _schema_default(key)
        if default is None:
            fix = f"{key}=null (unset), or a value in range"
        elif default is dataclasses.MISSING or default == "???":
            fix = f"{key}=<a value that is {rule}>"
        else:
            fix = f"{key}={default} (the default), or another value in range"
        problems.append(f"{key}={value} is out of range: it must be {rule}. Fix: {fix}")
    for name in cfg.hw.env or {}:
        if redaction.is_secret_name(name):
            # Config values land in Hydra's .hydra/ files and in Ray's runtime_env log.
            problems.append(
                f"hw.env.{name} looks like a secret, and settings are written to the run folder and Ray's logs. "
                f"Fix: remove hw.env.{name} and export {name} in the environment the run starts from "
                "(a local Ray's workers inherit it; on a cluster, set it on the cluster's nodes)"
            )
    return problems


def check_compare_metric(cfg: RunConfig) -> List[str]:
    """A sweep compares its jobs only once all of them ran: a name it cannot rank by is caught first."""
    from runner.compare.figures import FIGURES, QUALITY_FIGURES

    name = cfg.tracking.compare_metric
    if name in FIGURES or name in QUALITY_FIGURES:
        return []
    return [
        f"tracking.compare_metric={name} is not a figure the comparison ranks by. "
        f"Fix: tracking.compare_metric=<one of {', '.join(FIGURES + QUALITY_FIGURES)}>"
    ]


def _is_text(kind) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(kind):
        kind = kind.value_type  # e.g. a pandas category column of strings: rows read as str
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


def check_text_column_types(cfg: RunConfig, column_types: Mapping[str, Any]) -> List[str]:
    """Prompt columns whose type in the file's schema is not text: every row would fail.

    column_types maps column name -> pyarrow DataType, or None where the type is unknown.
    Columns that are missing are left to check_prompt_and_data.
    """
    try:
        wanted = prompt.column_map(cfg.prompt)
    except ValueError:
        return []  # check_prompt_and_data reports the template itself
    text_columns = [name for name, kind in column_types.items() if kind is not None and _is_text(kind)]
    problems = []
    for placeholder, column in wanted.items():
        kind = column_types.get(column)
        if kind is None or _is_text(kind):
            continue
        others = f" (text columns: {', '.join(text_columns)})" if text_columns else ""
        problems.append(
            f"prompt.columns.{placeholder}: prompt.user reads {{{placeholder}}} from column '{column}', whose type in "
            f"dataset={cfg.dataset.name} is {kind}, not text, so no row could become a prompt. "
            f"Fix: prompt.columns.{placeholder}=<a text column>{others}, or store '{column}' as strings"
        )
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


def run_checks(cfg: RunConfig, location: Optional[Location] = None, resume: bool = False):
    """Raise PreflightError listing every problem; return the dataset's reader. The run's
    location is checked when given."""
    problems = check_settings(cfg) + check_compare_metric(cfg) + check_hardware(cfg) + cluster.address_problems(cfg) + check_limits(cfg) + models.check(cfg.model)
    problems += warm_engine.problems(cfg)
    if location is not None:
        problems += check_run_location(location, resume)
    reader = None
    try:
        reader = readers.for_dataset(
            cfg.dataset, text_columns=prompt.column_map(cfg.prompt).values(), rows_per_chunk=cfg.processor.rows_per_file,
        )
        columns = reader.columns()
        problems += check_prompt_and_data(cfg, columns)
        problems += outputs.from_config(cfg).column_problems(columns, cfg.dataset.name)
        problems += check_text_column_types(cfg, reader.column_types())
    except readers.DatasetError as error:
        # The reader checks some settings for itself (dataset.limit, num_rows): say each once.
        if _setting_named(str(error)) not in {_setting_named(p) for p in problems}:
            problems.append(str(error))
    except OSError as error:  # storage: a missing bucket, refused credentials, no network
        problems.append(
            f"dataset.path={cfg.dataset.path!r} cannot be read ({type(error).__name__}: {error}). "
            "Fix: check the path, and for object storage that its credentials are in the environment"
        )
    if problems:
        raise PreflightError(problems)
    return reader


def _setting_named(problem: str) -> str:
    return problem.split("=", 1)[0].split(":", 1)[0].strip()


# Room for what a chat template adds around the messages (role markers, special tokens).
CHAT_TEMPLATE_MARGIN_TOKENS = 64


def _byte_bound(rows, prompt_cfg: PromptConfig, columns: Mapping[str, str]) -> int:
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


@dataclasses.dataclass
class PromptLengths:
    """What the length check found over the first rows: exact token counts where it had to
    tokenize, else only the byte bound (an upper bound on any of those prompts)."""

    rows: int
    longest: int
    shortest: Optional[int] = None  # tokenized only
    tokenized: bool = False
    problem: Optional[str] = None


def check_prompt_lengths(cfg: RunConfig, tokenizer_source: str, rows: List[dict]) -> Optional[str]:
    """Tokenize the first rows' prompts as the engine will see them; describe any that cannot fit.

    Returns None when all fit or when no tokenizer is available offline.
    """
    lengths = measure_prompt_lengths(cfg, tokenizer_source, rows)
    return lengths.problem if lengths else None


def measure_prompt_lengths(cfg: RunConfig, tokenizer_source: str, rows: List[dict]) -> Optional[PromptLengths]:
    """The first rows' prompt lengths; None for no rows. A tokenizer is loaded only when the
    byte bound says a prompt might not fit."""
    if not rows:
        return None
    prompt_cfg = cfg.prompt
    columns = prompt.column_map(prompt_cfg)
    max_model_len = cfg.engine.max_model_len or cfg.model.context_length
    max_tokens = prompt_cfg.max_tokens
    bound = _byte_bound(rows, prompt_cfg, columns)
    if bound + max_tokens <= max_model_len:
        return PromptLengths(rows=len(rows), longest=bound)
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, local_files_only=True)
    except Exception:  # noqa: BLE001 - the engine will load it; this check is best effort
        return PromptLengths(rows=len(rows), longest=bound)
    over, longest, shortest = 0, 0, None
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
        shortest = len(ids) if shortest is None else min(shortest, len(ids))
        over += len(ids) + max_tokens > max_model_len
    found = PromptLengths(rows=len(rows), longest=longest, shortest=shortest, tokenized=True)
    if over:
        found.problem = _length_problem(over, len(rows), longest, max_tokens, max_model_len, cfg.model.context_length)
    return found


def _length_problem(over: int, checked: int, longest: int, max_tokens: int, max_model_len: int, context: int) -> str:
    needed = longest + max_tokens
    found = (
        f"{over} of the first {checked} rows need more than max_model_len={max_model_len} tokens "
        f"(longest prompt {longest} tokens + prompt.max_tokens={max_tokens} = {needed})."
    )
    skip = "with errors.on_row_error=continue, prompts longer than the context go to failed/ and the rest run"
    if needed <= context:
        return (
            f"{found} Fix: engine.max_model_len={needed} (the model allows {context}), or lower prompt.max_tokens, "
            f"or shorten the inputs; {skip}"
        )
    # No engine.max_model_len can go past the model's own context: only the request can shrink.
    found += f" That is more than the model's context of {context} tokens (model.context_length)."
    if longest >= context:
        return f"{found} Fix: shorten the inputs (the longest prompt alone is over the context); {skip}"
    fix = f"prompt.max_tokens={context - longest}"
    if max_model_len < context:
        fix += f" with engine.max_model_len={context}"
    return f"{found} Fix: {fix} (the longest prompt then fits), or shorten the inputs; or {skip}"
