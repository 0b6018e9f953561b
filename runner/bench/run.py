"""One side-by-side run: compose and check the config, prepare what both sides need once,
run each side in a fresh process, compare, save bench.json and log it."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Dict, Optional, Sequence

import yaml

from runner import gpus, models, redaction
from runner.config import to_dict
from runner.bench import mlflow_run, prompts, report, spawn
from runner.bench.config import compose, side_config
from runner.bench.figures import RATIO_KEYS, ratios, token_check
from runner.bench.results import SIDES, BenchResult, SideResult
from runner.schema import RunConfig

log = logging.getLogger(__name__)


def run_bench(
    overrides: Sequence[str],
    sides: Sequence[str] = SIDES,
    out: Optional[Path] = None,
    json_path: Optional[Path] = None,
    cache: str = "cold",
    timeout_s: float = 3600.0,
    prewarm: bool = True,
    outputs_root: Optional[Path] = None,
) -> BenchResult:
    started_at = time.time()
    config = compose(overrides)
    outputs_root = Path(outputs_root or config.paths.outputs)
    run_dir = (Path(out) if out else outputs_root / "bench" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(redaction.redact(to_dict(config)), sort_keys=False))
    (run_dir / "side_config.yaml").write_text(yaml.safe_dump(side_config(config), sort_keys=False))
    prep = prepare(config, sides, run_dir)
    if prewarm:
        prep["prewarm_imports_s"] = spawn.prewarm_imports()
    results: Dict[str, SideResult] = {}
    for side in sides:
        prep[f"gpu_release_wait_before_{side}_s"] = spawn.wait_gpu_released()
        results[side] = spawn.run_side(side, run_dir, config, cache, timeout_s)
        _report_side(results[side])
    bench = BenchResult(
        command="python -m runner.bench " + " ".join(overrides), started_at=started_at, overrides=list(overrides),
        device=device_description(), cache=cache, model=config.model.name, hw=config.hw.name, prep=prep,
        results=results, ratios=ratios(results), tokens=token_check(results), run_dir=str(run_dir),
    )
    bench.table = report.side_by_side(bench)
    save(bench, run_dir, json_path)
    if config.tracking.enabled:
        try:
            bench.mlflow_run_id = mlflow_run.log(bench, config, outputs_root)
        except Exception as error:  # noqa: BLE001 - the JSON is on disk whatever the store says
            log.error("MLflow logging failed: %s: %s (results are in %s)", type(error).__name__, error, run_dir)
    return bench


def prepare(config: RunConfig, sides: Sequence[str], run_dir: Path) -> Dict[str, float]:
    """Before either side: the model located (the embedded one converted once) and, for the
    plain side, the requests written. Returns the seconds each took."""
    prep: Dict[str, float] = {}
    start = time.time()
    location = models.locate(config.model)
    prep["locate_s"] = time.time() - start
    if "plain" in sides:
        start = time.time()
        requests = prompts.build_requests(config, prompts.read_rows(config), location.source)
        with open(run_dir / "requests.jsonl", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(request) + "\n" for request in requests)
        prep["requests_s"] = time.time() - start
    return prep


def save(bench: BenchResult, run_dir: Path, json_path: Optional[Path]) -> None:
    text = bench.to_json()
    (run_dir / "bench.json").write_text(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text)


def _report_side(result: SideResult) -> None:
    if result.error is not None:
        log.error("%s failed (%s); log tail:\n%s", result.side, result.error, result.log_tail[-2000:])
    else:
        figures = result.numbers()
        log.info("%s: %s", result.side, json.dumps({k: round(figures[k], 2) for k in RATIO_KEYS}))


def device_description() -> str:
    described = gpus.query("name,memory.total,driver_version")
    if described:
        return "; ".join(", ".join(row) for row in described)
    import platform

    return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"
