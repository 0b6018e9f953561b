"""Running a side in a fresh process, with compile caches of its own, and what the parent
makes of it: its figures, vLLM's start-up figures from its log, or why it failed."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from runner import gpus
from runner.bench import vllm_log
from runner.bench.figures import figures
from runner.bench.results import SideResult, SideRun
from runner.schema import RunConfig

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
# Compile caches a side starts from: vLLM's own (torch.compile artifacts), Inductor's and Triton's.
CACHE_ENV = {"VLLM_CACHE_ROOT": "vllm", "TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
SIDE_MODULES = {"plain": "runner.bench.plain_side", "pipeline": "runner.bench.pipeline_side"}
LOG_TAIL_CHARS = 4000


def run_side(side: str, run_dir: Path, config: RunConfig, cache: str, timeout_s: float) -> SideResult:
    side_dir = run_dir / side
    side_dir.mkdir(parents=True, exist_ok=True)
    env = child_env()
    env.update({str(k): str(v) for k, v in (config.hw.env or {}).items()})
    env.update(cache_env(side_dir, cache))
    cmd = [sys.executable, "-m", SIDE_MODULES[side], str(run_dir)]
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
    log_text = log_path.read_text(errors="replace")
    result_path = side_dir / "result.json"
    if returncode != 0 or not result_path.is_file():
        error = f"exit code {returncode}" if returncode is not None else f"timed out after {timeout_s:.0f} s"
        return SideResult(side=side, error=error, log_tail=log_text[-LOG_TAIL_CHARS:])
    run = SideRun.load(result_path)
    return SideResult(side=side, run=run, figures=figures(run, spawned, exited), log_figures=vllm_log.log_figures(log_text, spawned))


def cache_env(side_dir: Path, cache: str) -> Dict[str, str]:
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


def child_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _kill_group(proc: subprocess.Popen) -> None:
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


def gpu_memory_used_mib() -> List[int]:
    try:
        return [int(row[0]) for row in gpus.query("memory.used", units=False)]
    except (ValueError, IndexError):
        return []


def wait_gpu_released(limit_s: float = 60.0, threshold_mib: int = 2000) -> float:
    """Wait until the previous side's GPU memory is back (its engine processes gone)."""
    start = time.time()
    while time.time() - start < limit_s:
        if max(gpu_memory_used_mib(), default=0) < threshold_mib:
            break
        time.sleep(1.0)
    return time.time() - start


def prewarm_imports() -> float:
    """Import vLLM, torch and Ray once, untimed, so the first side does not pay the cold disk reads alone."""
    start = time.time()
    subprocess.run(
        [sys.executable, "-c", "import torch, vllm, ray.data.llm, transformers"],
        capture_output=True, timeout=600, env=child_env(),
    )
    return time.time() - start
