from runner.errors import RunnerError


class CompareError(RunnerError):
    """A problem the user fixes with an option; the CLI prints it on one line, exit code 2."""
