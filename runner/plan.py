"""What a run would do, in words: the plan `dry_run=true` prints after every check passed."""

from __future__ import annotations

from typing import Optional

from runner import pipeline, redaction, warm_engine
from runner.models import ModelLocation
from runner.preflight import PromptLengths
from runner.schema import RunConfig
from runner.storage import Location


def describe(
    config: RunConfig,
    model: ModelLocation,
    scan,
    lengths: Optional[PromptLengths],
    location: Location,
    tracking_uri: Optional[str],
) -> str:
    rows = [
        ("model", f"{config.model.name}: {model.source} ({config.model.source}{', ' + model.note if model.note else ''})"),
        ("input", _input(config, scan)),
        ("prompts", _prompts(config, lengths)),
        ("engine", ", ".join(f"{k}={v}" for k, v in sorted(redaction.redact(pipeline.engine_kwargs(config, model)).items()))),
        ("Ray", _resources(config)),
        ("run", f"{location} (results/ as {config.output.format}, up to {config.processor.rows_per_file} rows a file)"),
        ("tracking", f"MLflow at {tracking_uri}, experiment {config.tracking.experiment!r}" if tracking_uri else "off"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["dry run: every check passed; nothing was started and no run state written. The run would be:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, text in rows]
    return "\n".join(lines)


def _input(config: RunConfig, scan) -> str:
    dataset = config.dataset
    where = dataset.path or dataset.source
    text = f"{dataset.name} ({where}): {scan.rows} row(s) in {len(scan.chunks)} chunk(s)"
    if scan.limit:
        text += f", dataset.limit={scan.limit}"
    if scan.bad_rows:
        text += f", {len(scan.bad_rows)} that cannot run (they go to failed/)"
    return text


def _prompts(config: RunConfig, lengths: Optional[PromptLengths]) -> str:
    budget = f"+ prompt.max_tokens={config.prompt.max_tokens}"
    limit = config.engine.max_model_len or config.model.context_length
    if lengths is None:
        return f"not measured (errors.length_check_rows=0) {budget}, max_model_len={limit}"
    if lengths.tokenized:
        return (
            f"{lengths.shortest}..{lengths.longest} tokens over the first {lengths.rows} row(s) (tokenized) {budget}, "
            f"max_model_len={limit}"
        )
    return (
        f"at most {lengths.longest} tokens over the first {lengths.rows} row(s) (UTF-8 bytes + the chat template's "
        f"margin: an upper bound, so no tokenizer was loaded) {budget}, max_model_len={limit}"
    )


def _resources(config: RunConfig) -> str:
    hw, proc, ray_cfg = config.hw, config.processor, config.ray
    replicas = proc.concurrency
    if hw.gpus_per_replica:
        gpus = hw.gpus_per_replica
        kind = hw.accelerator_type or "any type"
        each = f"{gpus} GPU(s) ({kind}) + {gpus} CPU(s)"
        total = f"{gpus * replicas} GPU(s)"
    else:
        each = f"{hw.cpus_per_replica} CPU(s), no GPU"
        total = f"{hw.cpus_per_replica * replicas:g} CPU(s)"
    where = f"the cluster at ray.address={ray_cfg.address}" if ray_cfg.address else (
        f"a local Ray with {ray_cfg.num_cpus} logical CPU(s)" if ray_cfg.num_cpus else "a local Ray"
    )
    lifetime = (
        "one engine for every job of a sweep with these engine settings (Ray Serve), stopped when the run ends"
        if warm_engine.wanted(config) else "its own engine, started and stopped with the job"
    )
    return (
        f"{replicas} engine replica(s) x {each} = {total} (hw={hw.name}), {lifetime}, batches of {proc.batch_size} rows, "
        f"{proc.light_stage_num_cpus} CPU per read/prompt/write task, on {where}"
    )
