"""Named points in a run where a test can kill it, to prove that a kill anywhere loses nothing.

`RUNNER_KILL_AT=<point>` (optionally `<point>:<n>` for the n-th time the point is reached)
makes the run SIGKILL its own process group there: the driver and everything it started
die at once, as on a node failure. `RUNNER_KILL_SIGNAL=SIGTERM` sends that instead, as a
scheduler or `kill` would, at a moment a test could not otherwise hit. A driver that joined a Ray cluster started none of the
cluster's processes, and they live on, as the cluster would. Unset, a point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_AT_ENV = "RUNNER_KILL_AT"
SIGNAL_ENV = "RUNNER_KILL_SIGNAL"
_reached: Counter = Counter()


def reached(point: str, count: int = None) -> None:
    """Kill here if asked to; `count` (e.g. files written so far) replaces the number of
    times the point was reached."""
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    _reached[point] += 1
    if (_reached[point] if count is None else count) >= int(nth or 1):
        sent = signal.Signals[os.environ.get(SIGNAL_ENV, "SIGKILL")]
        if sent != signal.SIGKILL:
            os.killpg(os.getpgrp(), sent) if os.getpgrp() == os.getpid() else os.kill(os.getpid(), sent)
            return
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
        # Not the group's leader (a shell's, a Ray job's, pytest's group): the group is not
        # the run's to take down, so only this process and what it started die.
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
        os.kill(os.getpid(), signal.SIGKILL)
