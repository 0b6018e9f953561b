"""What every Ray worker of a run does as it starts (runtime_env's worker_process_setup_hook):
Ray Data's fix (runner.ray_fixes), and, in the worker that becomes a job's own vLLM engine,
the engine core's fork server (runner.engine_core_fork)."""

from runner import engine_core_fork, ray_fixes

SETUP_HOOK = f"{__name__}.run"


def run() -> None:
    ray_fixes.install()
    engine_core_fork.start_with_the_engine_stage()
