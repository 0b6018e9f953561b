"""Start vLLM's engine core from a process that has already imported it.

Inside a Ray actor vLLM starts its engine core with `spawn`: a fresh interpreter that
imports torch and vLLM again after the replica has imported them itself, one after the
other. Plain vLLM forks instead and pays the import once. Here the engine's process (the
shared engine's replica, first thing; a job's own engine, Ray Data LLM's actor, as it loads
its stage: start_with_the_engine_stage) starts a multiprocessing fork server whose preload
imports the engine core (runner.engine_core_imports) while the process imports vLLM for its
own part; vLLM's engine core is then forked from that server, imports done. On one H200 the
engine core began 1-2 s after the replica had its config, against 19 s spawned; on 2 cores
the default job's start-up went from 29.5 to 24.2 s, and on its own engine from 35.8 to
30.1 s. `fork` itself stays unsafe in a Ray actor (its threads, gRPC), which is why vLLM
refuses it; the fork server is a fresh interpreter that never ran Ray.

What spawn gave the engine core and a fork server would not, each process carries:
- the environment at its start (vLLM sets variables just before, e.g. OMP_NUM_THREADS;
  the server's is the replica's when it started), and torch's thread count read from it;
- a process title it can set ("VLLM::EngineCore", what ps and nvidia-smi show);
- an end with the replica: the server exits when the replica does (no process holds its
  "alive" pipe but the replica), and the kernel then kills the engine core
  (PR_SET_PDEATHSIG). A spawned engine core outlived a killed parent (still running 20 s
  after, vLLM 0.32 on CPU): nothing in vLLM watches for it.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import signal
import sys
from typing import Dict, Optional

log = logging.getLogger(__name__)

PRELOAD = "runner.engine_core_imports"
ENGINE_STAGE_MODULE = "ray.llm._internal.batch.stages.vllm_engine_stage"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class EngineCoreProcess(multiprocessing.context.ForkServerProcess):
    def start(self) -> None:
        self._environment_at_start = dict(os.environ)
        self._server_pid = _server()._forkserver_pid
        super().start()

    def run(self) -> None:
        _as_if_spawned(self._environment_at_start, self._server_pid)
        super().run()


class EngineCoreContext(multiprocessing.context.ForkServerContext):
    def Process(self, *args, **kwargs):  # noqa: N802 - multiprocessing's name
        """An engine on several devices keeps vLLM's spawn: its engine core starts workers of
        its own (vLLM's or Ray's), and that was not measured forked on several GPUs."""
        config = (kwargs.get("kwargs") or {}).get("vllm_config")
        if config is not None and config.parallel_config.world_size > 1:
            return multiprocessing.get_context("spawn").Process(*args, **kwargs)
        return EngineCoreProcess(*args, **kwargs)


def start() -> bool:
    """Starts the fork server now (its imports run beside the caller's) and makes vLLM's
    engine core start from it; False where this platform has no fork server."""
    if not sys.platform.startswith("linux") or "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    _start_server()
    if not _route_engine_core_through(EngineCoreContext()):
        _stop(_server())
        return False
    return True


class _StartWithTheEngineStage(importlib.abc.MetaPathFinder):
    """Ray Data LLM's stages package imports a stage's module only when that stage is used, so
    the worker that imports the vLLM stage's is its engine actor, about to unpickle its UDF;
    its torch and vLLM imports then overlap the server's."""

    def find_spec(self, name, path=None, target=None):
        if name == ENGINE_STAGE_MODULE:
            sys.meta_path.remove(self)
            start()
        return None


def start_with_the_engine_stage() -> None:
    """For a Ray worker at its start (runner.worker_setup): where it becomes Ray Data LLM's
    engine actor (a job on its own engine), its engine core is forked as the replica's is."""
    if ENGINE_STAGE_MODULE not in sys.modules and not any(isinstance(f, _StartWithTheEngineStage) for f in sys.meta_path):
        sys.meta_path.insert(0, _StartWithTheEngineStage())


def _server() -> multiprocessing.forkserver.ForkServer:
    """multiprocessing's one fork server per process (its state is private to it)."""
    return multiprocessing.forkserver._forkserver


def _start_server() -> None:
    """Returns at once: the server imports in the background, and takes its first request
    once it is done."""
    server = _server()
    server.set_forkserver_preload([PRELOAD])
    server.ensure_running()


def _route_engine_core_through(context: EngineCoreContext) -> bool:
    import vllm.v1.engine.utils as engine_utils

    vllms_choice = getattr(engine_utils, "get_mp_context", None)
    if vllms_choice is None:
        log.warning("this vLLM starts its engine core some other way: it imports vLLM again (spawn)")
        return False

    def engine_core_context():
        vllms_choice()  # its side effects: the environment the engine core is to see
        return context

    engine_utils.get_mp_context = engine_core_context
    log.info("vLLM's engine core starts from a fork server that imported it ahead")
    return True


def _as_if_spawned(environment: Dict[str, str], server_pid: Optional[int]) -> None:
    _keep_process_title_settable()
    os.environ.clear()
    os.environ.update(environment)
    threads = environment.get("OMP_NUM_THREADS")
    torch = sys.modules.get("torch")
    if threads and threads.isdigit() and torch is not None:
        torch.set_num_threads(int(threads))  # spawn's torch reads it on import
    _close_alive_pipe()
    _die_with(server_pid)


def _keep_process_title_settable() -> None:
    """setproctitle writes the title over the memory of argv and the environment it finds at
    its first use; once the environment was rebuilt it finds none, and vLLM's "VLLM::EngineCore"
    (what nvidia-smi and ps show) is silently lost. Its first use is made here, before."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(setproctitle.getproctitle())


def _close_alive_pipe() -> None:
    """The server exits once no process holds its alive pipe; each child is handed one."""
    server = _server()
    fd: Optional[int] = server._forkserver_alive_fd
    server._forkserver_alive_fd = None
    server._forkserver_address = None
    server._forkserver_pid = None
    if fd is not None:
        os.close(fd)


def _die_with(server_pid: Optional[int]) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if server_pid is not None and os.getppid() != server_pid:  # it ended before the kernel was told
        os.kill(os.getpid(), signal.SIGKILL)


def _stop(server) -> None:
    pid = server._forkserver_pid
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
