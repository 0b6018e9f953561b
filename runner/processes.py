"""Ending processes the run started (Ray's, an engine's) when they do not end by themselves."""

from __future__ import annotations

from typing import List


def end(processes, grace_s: float) -> List:
    """Waits up to grace_s for the processes to exit, then kills what is left; returns those."""
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return alive
