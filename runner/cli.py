"""What every command shares: one log format and one way to end (runner.errors' rule).

`python -m runner` gets its logging from Hydra (conf/config.yaml's job_logging, the same
format) and ends through `hydra_command(main)`; the other commands call `command(main)`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Optional

from runner.errors import EXIT_FAILED, EXIT_REFUSED, RunIncomplete, RunnerError, exit_code

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
log = logging.getLogger("runner")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)


def run(body: Callable[[], Optional[int]], level: int = logging.INFO) -> int:
    """Run a command's body; its exit code by the rule: a RunnerError or an incomplete run is
    one line (it says what to do), anything else its traceback."""
    setup_logging(level)
    try:
        return body() or 0
    except (RunnerError, RunIncomplete) as error:
        log.error("%s", error)
        return exit_code(error)
    except KeyboardInterrupt as error:
        log.error("interrupted by Ctrl-C")
        return exit_code(error)
    except Exception as error:  # noqa: BLE001 - the rule's "anything else"
        log.exception("failed: %s", error)
        return exit_code(error)


def command(body: Callable[[], Optional[int]], level: int = logging.INFO) -> None:
    sys.exit(run(body, level))


def hydra_command(main: Callable[[], Any], job_started: Callable[[], bool]) -> None:
    """Run a @hydra.main entry point by the rule. A command line Hydra cannot compose (an
    unknown key or choice, a wrong type) is reported by Hydra itself, the key and what it
    takes without a traceback, and ends with exit 1 before any job starts, and so before
    any run folder exists: by the rule, a refused config is exit 2."""
    try:
        main()
    except SystemExit as exit_:
        # Hydra's own config is already torn down when a job's sys.exit reaches here, so only
        # the entry point knows whether a job began (a failed run is exit 1, not a refusal).
        if exit_.code == EXIT_FAILED and not job_started():
            sys.exit(EXIT_REFUSED)
        raise
