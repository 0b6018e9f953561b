"""Structured-config schema: every key a YAML option or a command-line override may set.

conf/config.yaml starts its defaults list with `run_schema`, so Hydra merges every group
option into these dataclasses: an unknown key or a wrong type fails at compose time with
the key's full name, before anything expensive starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from runner.errors import RunnerError


class Choice(str, Enum):
    """A setting with a fixed list of values: Hydra refuses any other at compose time, naming
    the list. OmegaConf reads a member by its name and writes it back by name, so each
    member's name is its value; as a str it compares (and hashes) equal to that value."""

    def __str__(self) -> str:
        return self.value


class ModelSource(Choice):
    embedded = "embedded"
    hub = "hub"
    local = "local"


class ModelWeights(Choice):
    real = "real"
    dummy = "dummy"


class DatasetSource(Choice):
    bundled = "bundled"
    jsonl = "jsonl"
    parquet = "parquet"
    csv = "csv"
    hub = "hub"
    synthetic = "synthetic"


class DuplicateIds(Choice):
    fail = "fail"
    rename = "rename"


class OutputFormat(Choice):
    parquet = "parquet"
    jsonl = "jsonl"


# `continue` is a keyword, so no class body can name that member.
OnRowError = Choice("OnRowError", [("continue", "continue"), ("fail", "fail")], module=__name__, qualname="OnRowError")


@dataclass
class ModelConfig:
    name: str = MISSING
    # embedded: a model a Python package ships (converted once into the local cache);
    # hub: a Hugging Face repo id, downloaded by the engine workers; local: a folder.
    source: ModelSource = MISSING
    path: str = MISSING
    # dummy: random weights from the model's shipped config.json (benchmarks, no download).
    weights: ModelWeights = ModelWeights.real
    revision: Optional[str] = None
    tokenizer: Optional[str] = None
    # The model's own limit (max_position_embeddings); engine.max_model_len may lower it.
    context_length: int = MISSING
    trust_remote_code: bool = False


@dataclass
class EngineConfig:
    """vLLM engine arguments under vLLM's own names; unset (null) ones are left to vLLM."""

    max_model_len: Optional[int] = None
    max_num_seqs: Optional[int] = None
    max_num_batched_tokens: Optional[int] = None
    enable_chunked_prefill: Optional[bool] = None
    enable_prefix_caching: Optional[bool] = None
    dtype: str = "auto"
    # Weight quantization, e.g. fp8 (quantized at load on Hopper-class GPUs); changes numerics.
    quantization: Optional[str] = None
    gpu_memory_utilization: Optional[float] = None
    enforce_eager: bool = False
    load_format: str = "auto"
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    kv_cache_dtype: Optional[str] = None
    seed: int = 0
    # Any other vLLM EngineArgs field, passed through unchanged.
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    name: str = MISSING
    # bundled (a file in runner/assets), jsonl, parquet, csv, hub, synthetic
    source: DatasetSource = MISSING
    # A file, a folder or a URI (s3://, gs://, ...); hub: the dataset's repo id.
    path: Optional[str] = None
    hub_config: Optional[str] = None
    split: str = "train"
    # The first N rows in file order (the same rows on every resume).
    limit: Optional[int] = None
    # The column that identifies each row. null: the data's `id` column if it has one,
    # else an id derived from file and line (`part-0.jsonl:17`), written as `id`.
    id_column: Optional[str] = None
    # An id that occurs more than once: fail (stop before any work, naming where) or
    # rename (the 2nd, 3rd... occurrence in file order becomes <id>#2, <id>#3...).
    on_duplicate_id: DuplicateIds = DuplicateIds.fail
    # The column of reference texts (e.g. highlights) each output is scored against (ROUGE);
    # null: no quality figures.
    reference_column: Optional[str] = None
    # synthetic only
    num_rows: int = 1000
    input_tokens: int = 1000


@dataclass
class PromptConfig:
    name: str = MISSING
    system: Optional[str] = None
    # Python format string; each {placeholder} is filled from the dataset column that
    # `columns` maps it to (a placeholder not in `columns` reads the column of its own name).
    user: str = MISSING
    columns: Dict[str, str] = field(default_factory=dict)
    chat_template: bool = True
    temperature: float = 0.3
    top_p: float = 1.0
    max_tokens: int = 150
    # Samples per input row: each is its own result row (`sample_index` 0..n-1, seeded by it).
    n: int = 1
    ignore_eos: bool = False
    # Structured output, one or the other: a JSON schema (inline mapping, or the path of a
    # .json file) or a list of labels. The engine's decoding is held to it; each top-level
    # field (or `label`) becomes a result column; an output that does not parse is a failed row.
    json_schema: Optional[Any] = None
    choices: Optional[List[str]] = None
    # With a JSON schema: the text field scored against dataset.reference_column.
    score_field: Optional[str] = None


@dataclass
class HardwareConfig:
    name: str = MISSING
    # Ray accelerator type (L4, A10G, A100, H100, H200, ...) the engine is placed on; null
    # takes any GPU (or, with gpus_per_replica 0, runs the engine on CPUs).
    accelerator_type: Optional[str] = None
    gpus_per_replica: int = 0
    cpus_per_replica: float = 1.0
    # On-demand price of one replica's hardware, USD per hour, and where it comes from.
    price_per_hour: float = 0.0
    price_source: str = ""
    # Environment for the engine workers (e.g. VLLM_CPU_KVCACHE_SPACE on CPU).
    env: Dict[str, str] = field(default_factory=dict)


@dataclass
class ProcessorConfig:
    batch_size: int = 16
    # Engine replicas (data parallel).
    concurrency: int = 1
    max_concurrent_batches: Optional[int] = None
    # Logical CPUs each light stage (pre/post-process, chat template) asks Ray for; a
    # fraction lets all stages hold an actor at once on a 2-core machine.
    light_stage_num_cpus: float = 0.25
    # Input rows per read task, which is also the most rows one results file holds: a kill
    # loses at most the files in flight, and fewer, larger files suit object storage.
    rows_per_file: int = 1000
    tokenize_stage: bool = False
    detokenize_stage: bool = False
    # Rows go to one engine that outlives the job (runner.warm_engine), started once for all
    # the jobs of a sweep with the same model and engine settings. null: on a local Ray, in a
    # sweep (-m), and for a single job whose engine is one replica on the CPU or one GPU
    # (where it was faster) when Ray Serve is installed; true: always on a local Ray; false:
    # each job starts and stops its own engine (Ray Data LLM's vLLMEngineProcessorConfig).
    shared_engine: Optional[bool] = None


@dataclass
class RayConfig:
    # null starts a local Ray, unless RAY_ADDRESS is set (`ray job submit`, KubeRay pods):
    # then the run joins that cluster. "auto" or host:port joins an existing cluster (run
    # on one of its nodes); "local" always starts a local Ray. Ray Client (ray://) is not
    # supported: submit the run as a Ray job instead.
    address: Optional[str] = None
    # Logical CPUs of a local Ray (more than the cores, so that each stage can hold an actor);
    # never passed to a cluster the run joins.
    num_cpus: Optional[int] = None
    # Ray's web dashboard for a local Ray (needs ray[default]); off spares its processes' CPU.
    dashboard: bool = False
    # The cluster adds nodes on demand (KubeRay or `ray up` autoscaler): resources it lacks
    # now are waited for instead of refused before the run.
    autoscaling: bool = False
    # How long the engine replicas (and each stage's actors) may take to be placed and
    # loaded before the run stops (it stays resumable), instead of waiting forever for
    # resources that never come.
    engine_start_timeout_s: int = 1800


@dataclass
class TrackingConfig:
    enabled: bool = True
    # null: a SQLite store at <paths.outputs>/mlflow.db with artifacts in <paths.outputs>/mlartifacts.
    uri: Optional[str] = None
    # The run's local folder (output.uri or outputs/) is on storage every node of the Ray
    # cluster mounts at the same path; without it a multi-node run needs a URI.
    shared_mount: bool = False
    experiment: str = "runner"
    run_name: Optional[str] = None
    sample_rows: int = 8
    log_results: bool = True
    # What the comparison at a sweep's end calls fastest (runner.compare --metric): a rate,
    # highest wins, or a duration (*_s), lowest wins.
    compare_metric: str = "output_tokens_per_s"


@dataclass
class OutputConfig:
    format: OutputFormat = OutputFormat.parquet
    # Where runs live: null keeps each run in its Hydra folder (outputs/runs/<date_time>);
    # a folder or URI (s3://bucket/prefix, gs://..., /mnt/shared/runs) puts the run's state,
    # results and figures under it, at the same relative path (runs/<date_time>).
    uri: Optional[str] = None
    # The run's local folder (output.uri or outputs/) is on storage every node of the Ray
    # cluster mounts at the same path; without it a multi-node run needs a URI.
    shared_mount: bool = False


@dataclass
class ErrorsConfig:
    # continue: a row that fails (bad field, prompt too long, engine error) goes to the
    # run's failed/ folder with its reason and the run goes on; fail: it stops the run.
    on_row_error: OnRowError = OnRowError["continue"]
    # Rows whose prompts are tokenized before the run, to find any that cannot fit.
    length_check_rows: int = 10000


@dataclass
class PathsConfig:
    # Run folders (runs/<date_time>, multirun/<date_time>/<job>), the local MLflow store
    # (mlflow.db, mlartifacts/), comparison plots and bench runs; relative to where the
    # command runs.
    outputs: str = "outputs"


@dataclass
class LogConfig:
    # true: Ray's and vLLM's own output (the workers' lines, Ray's and Ray Data's messages,
    # warnings) on the terminal, as Ray prints it; false: in the run's log file only
    # (<run folder>/__main__.log, runner.chatter), the terminal keeping the runner's lines,
    # errors, Ray Data's progress and the summary.
    verbose: bool = False


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    hw: HardwareConfig = field(default_factory=HardwareConfig)
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    errors: ErrorsConfig = field(default_factory=ErrorsConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    # Check config, model and data, print the plan, start nothing.
    dry_run: bool = False


def register() -> None:
    from hydra.core.config_store import ConfigStore  # here: the engine workers unpickle these dataclasses without Hydra

    ConfigStore.instance().store(name="run_schema", node=RunConfig)


class UnknownKeyError(RunnerError, KeyError):
    def __str__(self) -> str:
        return self.args[0]


def unknown_keys(node: DictConfig, prefix: str = "") -> List[str]:
    """Keys that `+key=value` forced into a typed section (Hydra lets `+` add to any node)."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return []
    known = {f.name for f in dataclasses.fields(schema)}
    found = []
    for key in node.keys():
        name = f"{prefix}{key}"
        if key not in known:
            found.append(name)
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            found.extend(unknown_keys(child, name + "."))
    return found


def check_keys(cfg: DictConfig) -> None:
    """Fail on keys the schema does not know, naming them and the section's known keys."""
    found = unknown_keys(cfg)
    if found:
        raise UnknownKeyError(
            "unknown config key(s): " + ", ".join(found)
            + ". Fix: check the spelling against runner/schema.py; vLLM arguments we do not list go under engine.extra.<name>"
        )


def validate(cfg: DictConfig) -> None:
    """Fail on keys the schema does not know, naming them and the section's known keys, and
    on structured-output settings that cannot be used (runner.outputs)."""
    check_keys(cfg)
    from runner import outputs, preflight

    problems = outputs.config_problems(OmegaConf.to_object(cfg))
    if problems:
        raise preflight.PreflightError(problems)
