class CompareError(Exception):
    """A problem the user fixes with an option; the CLI prints it on one line, exit code 2."""
