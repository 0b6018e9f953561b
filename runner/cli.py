"""What every command shares: one log format and one way to end (runner.errors' rule).

`python -m runner` gets its logging from Hydra (conf/config.yaml's job_logging, the same
format); the other commands call `command(main)`.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, Optional

from runner.errors import RunIncomplete, RunnerError, exit_code

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
