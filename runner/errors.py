"""How every command ends: `python -m runner`, `runner.resume`, `runner.track`,
`runner.compare` and `runner.bench` follow one rule.

- 0: done.
- 2: refused: a RunnerError, something the person fixes (a setting, a file, a line), said
  in one message that names it and the fix. Raised before any work where it can be.
- 1: failed during the work (anything else); the rows already written are kept.
- 130 / 143: interrupted by Ctrl-C / SIGTERM (128 + the signal's number, as a shell says).
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
EXIT_CTRL_C, EXIT_SIGTERM = 130, 143


class RunnerError(Exception):
    """A problem the person fixes, with the message that says how (exit 2)."""


class ConfigError(RunnerError):
    """The config cannot be composed or read (a typo, a wrong type, an unknown choice)."""


class RunIncomplete(Exception):
    """The work ended but rows are missing or repeated; the run stays resumable (exit 1)."""


def exit_code(error: BaseException) -> int:
    if isinstance(error, KeyboardInterrupt):
        return EXIT_CTRL_C
    if isinstance(error, RunnerError):
        return EXIT_REFUSED
    return EXIT_FAILED
