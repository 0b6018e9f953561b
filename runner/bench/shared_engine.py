"""One job against a sweep of the same job over several values of one setting: what a sweep
costs when its jobs share a warm engine (issue 12's target: the sweep within 1.6x one job).

    python -m runner.bench.shared_engine --sweep processor.batch_size=32,64,128,256 -- +experiment=bench_h100

Each is `python -m runner` in its own process, timed from spawn to exit; the single job runs
the first value. Per job, the figures come from its own metrics.json (startup_s, generation_s,
output tokens/s) and MLflow tag runner.engine (which engine, and whether the job started it).
The result is printed, written to <out>/shared_engine.json and logged to MLflow (tag
runner.kind=bench). Run the single job first once with cold caches if the sweep should see
warm ones (vLLM's compile caches live under ~/.cache/vllm and survive between processes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from runner import cli, tracking
from runner.bench.config import compose

FIGURES = ("startup_s", "generation_s", "wall_s", "output_tokens_per_s", "steady_output_tokens_per_s", "rows_ok")


def timed_run(args: Sequence[str], log_path: Path, timeout_s: float) -> float:
    started = time.time()
    with open(log_path, "w") as log_file:
        done = subprocess.run([sys.executable, "-m", "runner", *args], stdout=log_file, stderr=subprocess.STDOUT, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"python -m runner {' '.join(args)} exited {done.returncode}; see {log_path}")
    return time.time() - started


def job_figures(run_dir: Path) -> Dict[str, Any]:
    figures = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    return {k: figures[k] for k in FIGURES if k in figures}


def measure(base: Sequence[str], sweep: str, out: Path, timeout_s: float, single: bool) -> Dict[str, Any]:
    key, _, values = sweep.partition("=")
    first = values.split(",")[0]
    out.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"base": list(base), "sweep": sweep, "started_at": time.time()}
    if single:
        one_dir = out / "single"
        result["single_s"] = timed_run([*base, f"{key}={first}", f"hydra.run.dir={one_dir}"], out / "single.log", timeout_s)
        result["single"] = job_figures(one_dir)
    sweep_dir = out / "sweep"
    result["sweep_s"] = timed_run(["-m", *base, sweep, f"hydra.sweep.dir={sweep_dir}"], out / "sweep.log", timeout_s)
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / "metrics.json").is_file()), key=lambda p: int(p.name))
    if len(jobs) < len(values.split(",")):
        # Hydra ends a multirun with exit 0 even when its jobs failed; a sweep without its figures is no measurement.
        raise RuntimeError(f"{len(jobs)} of {len(values.split(','))} sweep jobs wrote metrics.json; see {out / 'sweep.log'}")
    result["jobs"] = [{"job": p.name, **job_figures(p)} for p in jobs]
    if single:
        result["sweep_over_single"] = result["sweep_s"] / result["single_s"]
    (out / "shared_engine.json").write_text(json.dumps(result, indent=2))
    return result


def table(result: Dict[str, Any]) -> str:
    lines = [f"sweep {result['sweep']}: {result['sweep_s']:.1f} s end to end"]
    if "single_s" in result:
        lines.append(f"one job: {result['single_s']:.1f} s end to end; sweep / one job = {result['sweep_over_single']:.2f}x")
    lines.append("job  startup_s  generation_s  wall_s  out tok/s  steady out tok/s")
    for job in result["jobs"]:
        lines.append(f"{job['job']:>3}  {job.get('startup_s', 0):9.1f}  {job.get('generation_s', 0):12.1f}  {job.get('wall_s', 0):6.1f}"
                     f"  {job.get('output_tokens_per_s', 0):9.1f}  {job.get('steady_output_tokens_per_s', 0):16.1f}")
    return "\n".join(lines)


def log_to_mlflow(result: Dict[str, Any], base: Sequence[str], out: Path) -> Optional[str]:
    config = compose(base)
    if not config.tracking.enabled:
        return None
    figures = {"sweep_s": result["sweep_s"]}
    if "single_s" in result:
        figures.update(single_s=result["single_s"], sweep_over_single=result["sweep_over_single"])
    for job in result["jobs"]:
        figures.update({f"job{job['job']}.{k}": float(v) for k, v in job.items() if k != "job"})
    tags = {"runner.kind": "bench", "runner.bench": "shared_engine", "runner.run_dir": str(out)}
    return tracking.log_record(config, Path(config.paths.outputs), f"shared-engine-{out.name}", tags, figures,
                               extra_params={"bench.sweep": result["sweep"]}, files=[(out / "shared_engine.json", None)],
                               started_at=result["started_at"])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.bench.shared_engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", nargs="*", help="overrides of both runs, as for python -m runner")
    parser.add_argument("--sweep", required=True, help="key=v1,v2,... swept by the multirun")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/shared_engine") / time.strftime("%Y-%m-%d_%H-%M-%S"))
    parser.add_argument("--no-single", action="store_true", help="only the sweep")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)

    def run() -> int:
        result = measure(args.base, args.sweep, args.out.resolve(), args.timeout, not args.no_single)
        print(table(result), flush=True)
        run_id = log_to_mlflow(result, args.base, args.out.resolve())
        if run_id:
            print(f"logged to MLflow as run {run_id}")
        return 0

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
