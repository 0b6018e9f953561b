"""vLLM's engine core forked from a server that imported it ahead (runner.engine_core_fork),
without Ray: a child process stands in for the replica. The real engine's process tree is
checked in test_shared_engine.py."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.e2e_helpers import ROOT

# The stand-in replica: starts the fork server as the replica does, then an engine-core-like
# child from it, reports both, and sleeps until it is killed.
STAND_IN_REPLICA = textwrap.dedent("""
    import json, os, sys, time
    from runner import engine_core_fork

    def engine_core(report_path):
        import setproctitle
        setproctitle.setproctitle("VLLM::EngineCore")  # as vLLM's engine core names itself
        with open(report_path, "w") as report:
            json.dump({
                "pid": os.getpid(), "parent": os.getppid(),
                "preloaded": "vllm.v1.engine.core" in sys.modules,
                "set_after_server_start": os.environ.get("RUNNER_TEST_SET_LATE"),
                "removed_after_server_start": os.environ.get("RUNNER_TEST_REMOVED_LATE"),
                "torch_threads": sys.modules["torch"].get_num_threads(),
            }, report)
        time.sleep(600)

    if __name__ == "__main__":
        os.environ["RUNNER_TEST_REMOVED_LATE"] = "1"
        os.environ["OMP_NUM_THREADS"] = "1"
        engine_core_fork._start_server()
        os.environ["RUNNER_TEST_SET_LATE"] = "yes"
        del os.environ["RUNNER_TEST_REMOVED_LATE"]
        os.environ["OMP_NUM_THREADS"] = "2"  # as vLLM sets it just before the engine core starts
        child = engine_core_fork.EngineCoreContext().Process(target=engine_core, args=(sys.argv[1],))
        child.start()
        print(json.dumps({"server": engine_core_fork._server()._forkserver_pid}), flush=True)
        time.sleep(600)
""")


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what} within {timeout} s")


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended; no parent left to reap it here
    except psutil.NoSuchProcess:
        return True


def test_the_engine_core_starts_imported_sees_the_environment_at_its_start_and_dies_with_its_replica(tmp_path):
    report_path = tmp_path / "engine_core.json"
    script = tmp_path / "replica.py"
    script.write_text(STAND_IN_REPLICA)
    replica = subprocess.Popen([sys.executable, str(script), str(report_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        server = json.loads(replica.stdout.readline())["server"]
        report = _wait_for(lambda: report_path.exists() and report_path.read_text() and json.loads(report_path.read_text()),
                           120, "the engine core did not start")
        assert report["parent"] == server != replica.pid
        assert report["preloaded"]  # imported by the server before the fork, not by the child
        assert report["set_after_server_start"] == "yes" and report["removed_after_server_start"] is None
        assert report["torch_threads"] == 2
        engine_core = psutil.Process(report["pid"])
        assert engine_core.cmdline()[0].startswith("VLLM::EngineCore") and engine_core.name() == "VLLM::EngineCore"

        os.kill(replica.pid, signal.SIGKILL)  # the OOM killer, a node gone: no clean-up runs
        replica.wait(timeout=10)
        _wait_for(lambda: _gone(server), 10, "the fork server outlived its replica")
        _wait_for(lambda: _gone(report["pid"]), 10, "the engine core outlived its replica")
    finally:
        if replica.poll() is None:
            replica.kill()


def test_an_engine_on_several_devices_keeps_vllms_spawn():
    from types import SimpleNamespace

    from runner import engine_core_fork

    def engine_on(devices: int):
        config = SimpleNamespace(parallel_config=SimpleNamespace(world_size=devices))
        return engine_core_fork.EngineCoreContext().Process(target=print, kwargs={"vllm_config": config})

    assert isinstance(engine_on(1), engine_core_fork.EngineCoreProcess)
    assert engine_on(2)._start_method == "spawn"
