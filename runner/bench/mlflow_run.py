"""The bench's one MLflow run (tag runner.kind=bench), written through runner.tracking:
metrics `plain.*`, `pipeline.*` (with `*.log.*`, vLLM's own start-up figures) and `ratio.*`."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from runner import tracking
from runner.bench.results import BenchResult
from runner.schema import RunConfig


def metrics(bench: BenchResult) -> Dict[str, float]:
    out: Dict[str, float] = {}
    for side, result in bench.results.items():
        out.update({f"{side}.{key}": float(value) for key, value in result.numbers().items()})
        out.update({f"{side}.log.{key}": float(value) for key, value in result.log_figures.items()})
    out.update({f"ratio.{key}": float(value) for key, value in bench.ratios.items()})
    return out


def log(bench: BenchResult, config: RunConfig, outputs_root: Path) -> str:
    """Log the bench over its own span (from bench.started_at); returns the MLflow run id."""
    run_dir = Path(bench.run_dir)
    name = config.tracking.run_name or f"bench-{config.model.name}-{config.hw.name}-{run_dir.name}"
    tags = {"runner.kind": "bench", "runner.run_dir": str(run_dir), "runner.model": config.model.name, "runner.hw": config.hw.name}
    files = [(run_dir / "bench.json", None)]
    files += [(run_dir / side / "log.txt", side) for side in bench.results if (run_dir / side / "log.txt").is_file()]
    return tracking.log_record(
        config, outputs_root, name, tags, metrics(bench),
        extra_params={"bench.sides": ",".join(bench.results), "bench.cache": bench.cache},
        files=files, started_at=bench.started_at,
    )
