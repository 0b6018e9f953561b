"""Side by side: plain vLLM (`LLM.generate`) and our pipeline, on the same prompts and engine settings.

    python -m runner.bench +experiment=bench_h100                      (the GPU benchmark in README.md)
    python -m runner.bench dataset=synthetic prompt=raw dataset.num_rows=8 prompt.max_tokens=16   (CPU)
    python -m runner.bench --sides pipeline +experiment=bench_h100 processor.batch_size=16

The overrides are the same config groups `python -m runner` takes. Each side runs in a fresh
process (`python -m runner.bench --child plain|pipeline ...`), one after the other, each with
an empty vLLM/torch compile cache of its own (`--cache cold`, the default) or with a private
copy of the one the same side left in an earlier bench's run folder (`--cache RUN_DIR`, warm
start), so neither side warms the other.

Plain side: the rows the dataset group reads, turned into prompts by the prompt group (chat
prompts through the tokenizer's chat template exactly as Ray's ChatTemplateStage applies it),
then `LLM(model, **engine_kwargs)` and one `LLM.generate` call. Pipeline side: `runner.app.run`
with tracking off, as `python -m runner` runs it. Figures, for both sides, measured from the
moment the process is spawned:

    ready_s        spawn -> the first request reaches the engine
    generation_s   first request in -> last output out (pipeline: the last row's finished_at,
                   the engine's clock; not a file's mtime, which accounting's rewrites move)
    e2e_s          spawn -> process exit (start-up, generation, writing results, shutdown)
    req_per_s, total_tokens_per_s, output_tokens_per_s    over generation_s (steady state)
    e2e_req_per_s, e2e_output_tokens_per_s                over e2e_s

Token counts are the engine's own (prompt_token_ids, output token_ids). The result goes to
<run folder>/bench.json, to --json PATH if given, and, unless tracking is off, to one MLflow
run whose metrics are `plain.*`, `pipeline.*` and `ratio.*` (pipeline / plain).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from runner import gpus, readers, result_files

log = logging.getLogger("runner.bench")

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SIDES = ("plain", "pipeline")
# Compile caches a side starts from: vLLM's own (torch.compile artifacts), Inductor's and Triton's.
CACHE_ENV = {"VLLM_CACHE_ROOT": "vllm", "TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
# Figures compared as pipeline / plain.
RATIO_KEYS = (
    "ready_s",
    "generation_s",
    "e2e_s",
    "req_per_s",
    "total_tokens_per_s",
    "output_tokens_per_s",
    "e2e_req_per_s",
    "e2e_output_tokens_per_s",
)


# ---------------------------------------------------------------------------- config


def compose(overrides: Sequence[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    from runner import schema

    schema.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    if hasattr(schema, "validate"):
        schema.validate(cfg)
    return cfg


def side_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The config both sides run: the composed one, tracking off (the bench logs once, itself)."""
    out = json.loads(json.dumps(config))
    out["tracking"]["enabled"] = False
    out["dry_run"] = False
    return out


# ---------------------------------------------------------------------------- requests


def chat_prompt(tokenizer, messages: List[Dict[str, str]]) -> str:
    """The prompt text Ray Data LLM's ChatTemplateStage makes from `messages`."""
    add_generation_prompt = messages[-1]["role"] == "user"
    return tokenizer.apply_chat_template(
        messages,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        continue_final_message=not add_generation_prompt,
    )


def build_requests(config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], model_source: str) -> List[Dict[str, Any]]:
    """Rows -> what the plain side sends: id, prompt text, sampling params (as the pipeline builds them)."""
    from runner import prompt

    prompt_cfg = config["prompt"]
    columns = prompt.column_map(prompt_cfg)
    id_column = readers.id_column(config["dataset"])
    tokenizer = None
    if prompt_cfg["chat_template"]:
        from transformers import AutoProcessor

        tokenizer = AutoProcessor.from_pretrained(model_source, trust_remote_code=bool(config["model"]["trust_remote_code"]))
    requests = []
    for index, row in enumerate(rows):
        request = prompt.build_request(row, prompt_cfg, columns)
        text = chat_prompt(tokenizer, request["messages"]) if tokenizer is not None else request["prompt"]
        row_id = row.get(id_column, index)
        requests.append({"id": str(row_id), "prompt": text, "sampling_params": request["sampling_params"]})
    return requests


def read_rows(config: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The dataset group's rows, with the ids the pipeline gives them, read by the same reader."""
    from runner import prompt, readers

    reader = readers.for_dataset(config["dataset"], text_columns=prompt.column_map(config["prompt"]).values())
    return reader.head(reader.scan().rows)


# ---------------------------------------------------------------------------- children


def _stamp(marks: Dict[str, float], name: str) -> None:
    marks[name] = time.time()
    print(f"[bench] {name} {marks[name]:.3f}", flush=True)


def child_plain(run_dir: Path) -> None:
    marks: Dict[str, float] = {}
    _stamp(marks, "child_start")
    side_dir = run_dir / "plain"
    config = yaml.safe_load((run_dir / "side_config.yaml").read_text())
    requests = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines() if line.strip()]

    from vllm import LLM, SamplingParams

    from runner import models, pipeline

    _stamp(marks, "imported")
    location = models.locate(config["model"])
    kwargs = pipeline.engine_kwargs(config, location)
    # Ray Data LLM's engine keeps vLLM's stats on (AsyncEngineArgs' default); LLM turns them
    # off by default. Same setting on both sides.
    kwargs.setdefault("disable_log_stats", False)
    llm = LLM(model=location.source, **kwargs)
    _stamp(marks, "engine_ready")
    resolved = {}
    try:
        scheduler = llm.llm_engine.vllm_config.scheduler_config
        resolved = {"max_num_seqs": scheduler.max_num_seqs, "max_num_batched_tokens": scheduler.max_num_batched_tokens}
    except AttributeError:
        pass
    prompts = [r["prompt"] for r in requests]
    params = [SamplingParams(**r["sampling_params"]) for r in requests]
    _stamp(marks, "first_request_in")
    outputs = llm.generate(prompts, params, use_tqdm=False)
    _stamp(marks, "last_output_out")

    rows = []
    for request, output in zip(requests, outputs):
        completion = output.outputs[0]
        rows.append(
            {
                "id": request["id"],
                "generated_text": completion.text,
                "num_input_tokens": len(output.prompt_token_ids or []),
                "num_generated_tokens": len(completion.token_ids),
            }
        )
    with open(side_dir / "results.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    _stamp(marks, "results_written")
    result = {
        "side": "plain",
        "marks": marks,
        "engine_kwargs": kwargs,
        "resolved": resolved,
        "rows": len(rows),
        "input_tokens": sum(r["num_input_tokens"] for r in rows),
        "output_tokens": sum(r["num_generated_tokens"] for r in rows),
        "input_tokens_by_id": {r["id"]: r["num_input_tokens"] for r in rows},
    }
    (side_dir / "result.json").write_text(json.dumps(result, indent=2))


def child_pipeline(run_dir: Path) -> None:
    marks: Dict[str, float] = {}
    _stamp(marks, "child_start")
    side_dir = run_dir / "pipeline"
    config = yaml.safe_load((run_dir / "side_config.yaml").read_text())

    from omegaconf import OmegaConf

    from runner import app, pipeline

    _stamp(marks, "imported")
    # Timestamps of the pipeline's own steps, by wrapping them (behaviour unchanged).
    for name in ("start_ray", "build_processor"):
        _wrap_timed(pipeline, name, marks)
    outcome = app.run(OmegaConf.create(config), side_dir / "run", outputs_root=side_dir / "outputs")
    _stamp(marks, "app_returned")

    table = _read_results(outcome.results_dir)
    marks.update(pipeline_marks(table, outcome.location))
    id_column = readers.id_column(config["dataset"])
    ids = [str(i) for i in table[id_column]] if id_column in table else []
    result = {
        "side": "pipeline",
        "marks": marks,
        "engine_kwargs": pipeline.engine_kwargs(config, _location(config)),
        "rows": len(table["num_input_tokens"]),
        "input_tokens": int(sum(table["num_input_tokens"])),
        "output_tokens": int(sum(table["num_generated_tokens"])),
        "input_tokens_by_id": dict(zip(ids, (int(n) for n in table["num_input_tokens"]))),
        "metrics": outcome.metrics,
        "results_dir": str(outcome.results_dir),
    }
    (side_dir / "result.json").write_text(json.dumps(result, indent=2))


def pipeline_marks(table: Mapping[str, list], run) -> Dict[str, float]:
    """When the pipeline side's first request reached the engine, its last output left it, and
    its results were all written, from the rows' own engine-clock times and the pipeline's
    reported end (the run's manifest). Not from file mtimes: accounting rewrites a results
    file that held failed rows after the pipeline ended, which moved "last output" by as much
    as the settling took."""
    from runner import run_state

    starts = [f - l for f, l in zip(table["finished_at"], table["latency_s"])]
    last_out = max(table["finished_at"])
    ended = [a["finished_at"] for a in run_state.load(run).attempts if a.get("finished_at")]
    return {
        "first_request_in": min(starts),
        "last_output_out": last_out,
        "last_finished_at_reported": last_out,
        "results_written": ended[-1] if ended else last_out,
    }


def _location(config):
    from runner import models

    return models.locate(config["model"])


def _wrap_timed(module, name: str, marks: Dict[str, float]) -> None:
    original = getattr(module, name)

    def timed(*args, **kwargs):
        _stamp(marks, f"{name}_start")
        try:
            return original(*args, **kwargs)
        finally:
            _stamp(marks, f"{name}_end")

    setattr(module, name, timed)


def _read_results(results) -> Dict[str, list]:
    dataset = result_files.open_dataset(results)
    wanted = ["id", "num_input_tokens", "num_generated_tokens", "latency_s", "finished_at"]
    return dataset.to_table(columns=[c for c in wanted if c in dataset.schema.names]).to_pydict()


# ---------------------------------------------------------------------------- parent


def _cache_env(side_dir: Path, cache: str) -> Dict[str, str]:
    """Compile-cache folders for one side: empty ('cold'), or a private copy of an earlier one.

    `cache` may be an earlier bench's run folder (each side then copies the cache its own side
    left there: plain and pipeline engines do not hash to the same compile-cache key) or a cache folder.
    """
    root = side_dir / "cache"
    if root.exists():
        shutil.rmtree(root)
    if cache != "cold":
        source = Path(cache) / side_dir.name / "cache"
        shutil.copytree(source if source.is_dir() else Path(cache), root)
    root.mkdir(parents=True, exist_ok=True)
    env = {}
    for var, sub in CACHE_ENV.items():
        (root / sub).mkdir(exist_ok=True)
        env[var] = str(root / sub)
    return env


def gpu_memory_used_mib() -> List[int]:
    try:
        return [int(row[0]) for row in gpus.query("memory.used", units=False)]
    except (ValueError, IndexError):
        return []


def wait_gpu_released(limit_s: float = 60.0, threshold_mib: int = 2000) -> float:
    """Wait until the previous side's GPU memory is back (its engine processes gone)."""
    start = time.time()
    while time.time() - start < limit_s:
        used = gpu_memory_used_mib()
        if max(used, default=0) < threshold_mib:
            break
        time.sleep(1.0)
    return time.time() - start


def prewarm_imports() -> float:
    """Import vLLM, torch and Ray once, untimed, so the first side does not pay the cold disk reads alone."""
    start = time.time()
    subprocess.run(
        [sys.executable, "-c", "import torch, vllm, ray.data.llm, transformers"],
        capture_output=True, timeout=600, env=_child_base_env(),
    )
    return time.time() - start


def _child_base_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_side(side: str, run_dir: Path, config: Mapping[str, Any], cache: str, timeout_s: float) -> Dict[str, Any]:
    side_dir = run_dir / side
    side_dir.mkdir(parents=True, exist_ok=True)
    env = _child_base_env()
    env.update({str(k): str(v) for k, v in (config["hw"]["env"] or {}).items()})
    env.update(_cache_env(side_dir, cache))
    cmd = [sys.executable, "-m", "runner.bench", "--child", side, "--out", str(run_dir)]
    log_path = side_dir / "log.txt"
    log.info("%s: starting %s (log: %s)", side, " ".join(cmd), log_path)
    with open(log_path, "w", encoding="utf-8") as log_file:
        spawned = time.time()
        proc = subprocess.Popen(cmd, cwd=os.getcwd(), env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            returncode = None
        exited = time.time()
    result_path = side_dir / "result.json"
    if returncode != 0 or not result_path.is_file():
        tail = log_path.read_text(errors="replace")[-4000:]
        return {"side": side, "error": f"exit code {returncode}" if returncode is not None else f"timed out after {timeout_s:.0f} s", "log_tail": tail}
    result = json.loads(result_path.read_text())
    result.update(figures(result, spawned, exited))
    result["log_figures"] = log_figures(log_path.read_text(errors="replace"), spawned)
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def figures(result: Mapping[str, Any], spawned: float, exited: float) -> Dict[str, Any]:
    marks = result["marks"]
    first_in, last_out = marks["first_request_in"], marks["last_output_out"]
    generation = max(last_out - first_in, 1e-9)
    e2e = max(exited - spawned, 1e-9)
    rows, tokens_in, tokens_out = result["rows"], result["input_tokens"], result["output_tokens"]
    return {
        "timeline_s": {name: round(t - spawned, 3) for name, t in sorted(marks.items(), key=lambda kv: kv[1])},
        "ready_s": first_in - spawned,
        "generation_s": generation,
        "results_s": marks["results_written"] - spawned,
        "e2e_s": e2e,
        "exit_after_results_s": exited - marks["results_written"],
        "import_s": marks["imported"] - spawned,
        "req_per_s": rows / generation,
        "total_tokens_per_s": (tokens_in + tokens_out) / generation,
        "output_tokens_per_s": tokens_out / generation,
        "e2e_req_per_s": rows / e2e,
        "e2e_output_tokens_per_s": tokens_out / e2e,
    }


# vLLM's own start-up log lines: what each part of getting the engine ready took.
_LOG_DURATIONS = {
    "weights_load_s": re.compile(r"Loading weights took ([\d.]+) seconds|Model loading took [\d.]+ ?GiB(?: memory)? and ([\d.]+) seconds"),
    "dynamo_s": re.compile(r"Dynamo bytecode transform time: ([\d.]+) s"),
    "compile_s": re.compile(r"torch\.compile takes ([\d.]+) s in total|torch\.compile took ([\d.]+) s in total"),
    "graph_capture_s": re.compile(r"Graph capturing finished in ([\d.]+) secs"),
    "engine_init_s": re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"),
}
_VLLM_TIME = re.compile(r"(?:INFO|WARNING|DEBUG) (\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))?")
# Events, in start-up order; each is timed by the vLLM timestamp of the first line matching it.
_LOG_EVENTS = {
    # vLLM imported: by the plain process, or (pipeline) by the Ray actor that holds the engine.
    "vllm_imported": re.compile(r"^(?!.*vLLMEngineStageUDF).*(?:INFO|WARNING) \d\d-\d\d "),
    "actor_vllm_imported": re.compile(r"vLLMEngineStageUDF.*(?:INFO|WARNING) \d\d-\d\d "),
    # Inside a Ray actor vLLM must spawn (not fork) its engine-core process, which re-imports vLLM.
    "engine_core_spawn_forced": re.compile(r"must use the `spawn` multiprocessing start method"),
    "engine_core_start": re.compile(r"Initializing a V\d LLM engine"),
    "weights_loaded": _LOG_DURATIONS["weights_load_s"],
    "engine_init_done": _LOG_DURATIONS["engine_init_s"],
}


def log_figures(text: str, spawned: float) -> Dict[str, float]:
    """Durations vLLM reports while starting, and when (seconds after spawn) key events happened."""
    found: Dict[str, float] = {}
    year = datetime.fromtimestamp(spawned).year
    for line in text.splitlines():
        for name, pattern in _LOG_DURATIONS.items():
            match = pattern.search(line)
            if match and name not in found:
                found[name] = float(next(g for g in match.groups() if g is not None))
        for name, pattern in _LOG_EVENTS.items():
            key = f"at_{name}_s"
            if key in found or not pattern.search(line):
                continue
            stamp = _VLLM_TIME.search(line)
            if stamp:
                month, day, hour, minute, second, frac = stamp.groups()
                when = datetime(year, int(month), int(day), int(hour), int(minute), int(second)).timestamp()
                found[key] = when + (float("0." + frac) if frac else 0.0) - spawned
    return found


def token_check(results: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Per-row input token counts, plain vs pipeline, matched by id."""
    plain = results.get("plain", {}).get("input_tokens_by_id") or {}
    ours = results.get("pipeline", {}).get("input_tokens_by_id") or {}
    common = sorted(set(plain) & set(ours))
    diffs = [ours[i] - plain[i] for i in common]
    return {
        "rows_matched": len(common),
        "max_abs_input_token_diff": max((abs(d) for d in diffs), default=None),
        "output_tokens_equal": results.get("plain", {}).get("output_tokens") == results.get("pipeline", {}).get("output_tokens"),
    }


def ratios(results: Mapping[str, Mapping[str, Any]]) -> Dict[str, float]:
    plain, ours = results.get("plain", {}), results.get("pipeline", {})
    out = {}
    for key in RATIO_KEYS:
        if isinstance(plain.get(key), (int, float)) and isinstance(ours.get(key), (int, float)) and plain[key]:
            out[key] = ours[key] / plain[key]
    return out


TABLE_ROWS = [
    ("seconds to engine ready (spawn -> first request)", "ready_s", "{:.1f}"),
    ("generation seconds", "generation_s", "{:.1f}"),
    ("end-to-end seconds (spawn -> exit)", "e2e_s", "{:.1f}"),
    ("req/s (generation)", "req_per_s", "{:.2f}"),
    ("total tokens/s (generation)", "total_tokens_per_s", "{:,.0f}"),
    ("output tokens/s (generation)", "output_tokens_per_s", "{:,.0f}"),
    ("req/s (end to end)", "e2e_req_per_s", "{:.2f}"),
    ("output tokens/s (end to end)", "e2e_output_tokens_per_s", "{:,.1f}"),
    ("rows", "rows", "{:d}"),
    ("input tokens", "input_tokens", "{:,d}"),
    ("output tokens", "output_tokens", "{:,d}"),
]


def table(summary: Mapping[str, Any]) -> str:
    results, ratio = summary["results"], summary["ratios"]
    sides = [s for s in SIDES if s in results]
    head = ["figure"] + sides + (["pipeline / plain"] if len(sides) == 2 else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, fmt in TABLE_ROWS:
        cells = [label]
        for side in sides:
            value = results[side].get(key)
            cells.append(fmt.format(value) if isinstance(value, (int, float)) else str(results[side].get("error", "-")))
        if len(sides) == 2:
            cells.append(f"{ratio[key]:.3f}" if key in ratio else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log_mlflow(summary: Mapping[str, Any], config: Mapping[str, Any], run_dir: Path, outputs_root: Path) -> Optional[str]:
    """One MLflow run for the bench, spanning it (summary["started_at"] .. now); params
    redacted as every logged config is."""
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking.context import registry as context_registry

    from runner import redaction, tracking

    mlflow.set_tracking_uri(tracking.resolve_uri(config["tracking"], outputs_root))
    exp_id = tracking.experiment_id(mlflow, config["tracking"]["experiment"], outputs_root)
    metrics: Dict[str, float] = {}
    for side, result in summary["results"].items():
        for key, value in result.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"{side}.{key}"] = float(value)
        for key, value in (result.get("log_figures") or {}).items():
            metrics[f"{side}.log.{key}"] = float(value)
    metrics.update({f"ratio.{k}": float(v) for k, v in summary["ratios"].items()})
    params = {k: str(v)[:500] for k, v in tracking.flatten(redaction.redact(dict(config))).items()}
    params["bench.sides"] = ",".join(summary["results"])
    params["bench.cache"] = summary["cache"]
    name = config["tracking"].get("run_name") or f"bench-{config['model']['name']}-{config['hw']['name']}-{run_dir.name}"
    tags = {"runner.kind": "bench", "runner.run_dir": str(run_dir.resolve()), "runner.model": config["model"]["name"], "runner.hw": config["hw"]["name"]}
    client = mlflow.MlflowClient()
    started = summary.get("started_at")
    run = client.create_run(exp_id, start_time=int(started * 1000) if started else None, tags=context_registry.resolve_tags(tags), run_name=name)
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):
            client.log_batch(run_id, params=items[start : start + 100])
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()])
        client.log_artifact(run_id, str(run_dir / "bench.json"))
        for side in summary["results"]:
            if (run_dir / side / "log.txt").is_file():
                client.log_artifact(run_id, str(run_dir / side / "log.txt"), artifact_path=side)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def run_bench(
    overrides: Sequence[str],
    sides: Sequence[str] = SIDES,
    out: Optional[Path] = None,
    json_path: Optional[Path] = None,
    cache: str = "cold",
    timeout_s: float = 3600.0,
    prewarm: bool = True,
    outputs_root: Path = Path("outputs"),
) -> Dict[str, Any]:
    from omegaconf import OmegaConf

    from runner import models, preflight, redaction

    started_at = time.time()
    cfg = compose(overrides)
    config = OmegaConf.to_container(cfg, resolve=True)
    preflight.run_checks(config)
    run_dir = Path(out) if out else outputs_root / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(redaction.redact(config), sort_keys=False))
    children = side_config(config)
    (run_dir / "side_config.yaml").write_text(yaml.safe_dump(children, sort_keys=False))

    prep: Dict[str, float] = {}
    start = time.time()
    location = models.locate(config["model"])  # converts the embedded model once, before either side
    prep["locate_s"] = time.time() - start
    if "plain" in sides:
        start = time.time()
        rows = read_rows(config)
        requests = build_requests(config, rows, location.source)
        with open(run_dir / "requests.jsonl", "w", encoding="utf-8") as handle:
            for request in requests:
                handle.write(json.dumps(request) + "\n")
        prep["requests_s"] = time.time() - start
    if prewarm:
        prep["prewarm_imports_s"] = prewarm_imports()

    results: Dict[str, Dict[str, Any]] = {}
    for side in sides:
        prep[f"gpu_release_wait_before_{side}_s"] = wait_gpu_released()
        results[side] = run_side(side, run_dir, config, cache, timeout_s)
        if "error" in results[side]:
            log.error("%s failed (%s); log tail:\n%s", side, results[side]["error"], results[side]["log_tail"][-2000:])
        else:
            log.info("%s: %s", side, json.dumps({k: round(results[side][k], 2) for k in RATIO_KEYS}))

    summary: Dict[str, Any] = {
        "command": "python -m runner.bench " + " ".join(overrides),
        "started_at": started_at,
        "overrides": list(overrides),
        "device": device_description(),
        "cache": cache,
        "model": config["model"]["name"],
        "hw": config["hw"]["name"],
        "prep": prep,
        "results": results,
        "ratios": ratios(results),
        "tokens": token_check(results),
        "run_dir": str(run_dir),
    }
    summary["table"] = table(summary)
    text = json.dumps(summary, indent=2, default=str)
    (run_dir / "bench.json").write_text(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text)
    if config["tracking"]["enabled"]:
        try:
            summary["mlflow_run_id"] = log_mlflow(summary, config, run_dir, outputs_root)
        except Exception as error:  # noqa: BLE001 - the JSON is on disk whatever the store says
            log.error("MLflow logging failed: %s: %s (results are in %s)", type(error).__name__, error, run_dir)
    return summary


def device_description() -> str:
    described = gpus.query("name,memory.total,driver_version")
    if described:
        return "; ".join(", ".join(row) for row in described)
    import platform

    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="config overrides, as for python -m runner")
    parser.add_argument("--sides", default=",".join(SIDES), help="plain,pipeline (default) or one of them")
    parser.add_argument("--out", type=Path, help="run folder (default outputs/bench/<time>)")
    parser.add_argument("--json", type=Path, help="also write the result JSON here")
    parser.add_argument("--cache", default="cold", help="'cold' (each side starts with empty compile caches) or an earlier bench's run folder: each side starts from a copy of the caches its side left there")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each side may take")
    parser.add_argument("--no-prewarm", action="store_true", help="skip the untimed import of vLLM/torch before the sides")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.child:
        (child_plain if args.child == "plain" else child_pipeline)(args.out)
        return 0
    from hydra.errors import ConfigCompositionException

    from runner import preflight, schema

    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        parser.error(f"--sides: use plain, pipeline or plain,pipeline (got {args.sides!r})")
    try:
        summary = run_bench(args.overrides, sides, args.out, args.json, args.cache, args.timeout, not args.no_prewarm)
    except (preflight.PreflightError, schema.UnknownKeyError) as error:
        log.error("%s", error)  # it names the setting and the fix
        return 2
    except ConfigCompositionException as error:
        # As `python -m runner` reports it: Hydra's message, and the reason under it (the key and the schema).
        cause = f": {error.__cause__}" if error.__cause__ else ""
        log.error("the config cannot be composed: %s%s", error, cause)
        return 2
    print(summary["table"])
    print(json.dumps({"ratios": summary["ratios"], "tokens": summary["tokens"], "run_dir": summary["run_dir"]}, indent=2))
    return 0 if all("error" not in r for r in summary["results"].values()) else 1


if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    sys.exit(main())
