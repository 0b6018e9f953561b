"""Ray's and vLLM's own output ("chatter"): into the run's log file, off the terminal.

The terminal shows the runner's own lines (loggers runner.* and Hydra's), errors from
anything, Ray Data's progress and the end-of-run summary. Everything else goes to the run's
log file only, masked like the runner's lines (runner.redaction):

- the workers' stdout and stderr (every engine and stage actor: vLLM's engine lines, Ray
  Data's, Python warnings), which Ray forwards to the driver (`ray.init(log_to_driver=True)`)
  and prints there; here each line becomes a record of the `workers` logger, prefixed as Ray
  prefixes it ("(MapWorker(...) pid=123)");
- the log records of Ray, Ray Data, vLLM and any other library on the driver ("Started a
  local Ray instance", the execution plan, ...): a logger's own terminal handler is replaced
  by one that passes its records, at the same level, to the root logger's handlers;
- Python warnings (logging.captureWarnings).

The file is the root logger's file handler: for `python -m runner` the job log Hydra writes in
the job's folder (<run folder>/__main__.log), where the runner's own lines are too, in order;
a caller without one (runner.resume) names a file of its own. `log.verbose=true` leaves all of
it where Ray and the libraries print it, as before.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

WORKERS = "workers"
# Loggers whose lines are the run's own story; anything else reaches the terminal at ERROR.
OWN_LOGGERS = ("runner", "hydra", "__main__")
# Ray Data logs its progress there every 10 s when stdout is not a terminal (on a terminal it
# draws tqdm bars on stderr, which stay): of each block of ~16 lines, the terminal keeps the
# rows written so far ("Total Progress: 2000/?"); the stages' counts and resources go to the file.
PROGRESS_LOGGER = "ray.data._internal.progress.logging_progress"
PROGRESS_SHOWN = re.compile(r"^Total Progress: \S+/\S+$")
RAY_PRINT_HANDLER = "ray_print_logs"  # the name ray.init gives its worker-output printer
# Ray LLM looks for an optional `hash` file in a model folder in object storage and logs its
# absence, the usual case, as an error before going on as designed ("a hash file is optional").
HARMLESS_ERRORS = (("ray.llm.", re.compile(r"^Error reading \S+/hash: .*(NoSuchKey|NotFound|Not Found|404)")),)
log = logging.getLogger(__name__)

_quiet = False
_log_file: Optional[str] = None


def quiet() -> bool:
    """Whether the chatter is kept off the terminal now (log.verbose=false)."""
    return _quiet


def log_file() -> Optional[str]:
    """The file the chatter goes to, while it is kept off the terminal."""
    return _log_file if _quiet else None


def on_terminal(record: logging.LogRecord) -> bool:
    """Whether a record is one the terminal shows while the chatter is kept off it."""
    if record.levelno >= logging.ERROR:
        return not _harmless(record)
    if _own(record.name):
        return True
    return record.name == PROGRESS_LOGGER and bool(PROGRESS_SHOWN.match(record.getMessage()))


def _harmless(record: logging.LogRecord) -> bool:
    return any(record.name.startswith(logger) and pattern.match(record.getMessage()) for logger, pattern in HARMLESS_ERRORS)


class TerminalFilter(logging.Filter):
    """On a terminal handler: everything while verbose, else what `on_terminal` lets through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _quiet or on_terminal(record)


def _terminal_streams():
    return {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None}


def _is_terminal_handler(handler: logging.Handler) -> bool:
    return _is_stream_handler(handler) and id(getattr(handler, "stream", None)) in _terminal_streams()


def _is_stream_handler(handler: logging.Handler) -> bool:
    """A library's own stream handler prints to the terminal, sometimes through a stream of its
    own (MLflow's forwards to sys.stderr as it is at each write)."""
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def _own(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS)


class ToRoot(logging.Handler):
    """Stands in for a library logger's terminal handler, at its level: hands each record to
    the root logger's handlers (the file, and the terminal through TerminalFilter), unless
    the logger passes its records up anyway."""

    def __init__(self, owner: logging.Logger, level: int = logging.NOTSET):
        super().__init__(level)
        self.owner = owner

    def emit(self, record: logging.LogRecord) -> None:
        if not self.owner.propagate:
            logging.getLogger().handle(record)


class RoutedLogger(logging.Logger):
    """The class of loggers made while the chatter is kept off the terminal: a library that
    sets up its logger late gets a ToRoot where it adds a terminal handler (Ray LLM's, as the
    processor is built) or assigns a list holding one (MLflow's, as it is first imported)."""

    def _routed(self, handler: logging.Handler) -> logging.Handler:
        if _quiet and _is_stream_handler(handler) and not _own(self.name):
            return ToRoot(self, handler.level)
        return handler

    def addHandler(self, handler: logging.Handler) -> None:
        super().addHandler(self._routed(handler))

    @property
    def handlers(self):
        return self.__dict__["_handlers"]

    @handlers.setter
    def handlers(self, value) -> None:
        self.__dict__["_handlers"] = [self._routed(h) for h in value]


def reroute() -> None:
    """Every logger made so far, but the root and the runner's own, that prints to the terminal
    itself (Ray's, Ray Data's) has that handler replaced by a ToRoot at the same level: the
    file takes its records, the terminal what `on_terminal` lets through. Ray sets its loggers
    up as it is imported and started, so this runs again around ray.init. A no-op while verbose."""
    if not _quiet:
        return
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or _own(name):
            continue
        for handler in [h for h in logger.handlers if _is_stream_handler(h)]:
            logger.removeHandler(handler)
            logging.Logger.addHandler(logger, ToRoot(logger, handler.level))


def log_worker_output(data: Dict[str, Any], logger: Optional[logging.Logger] = None) -> None:
    """One batch of a worker's output lines, as Ray's log monitor publishes it, as log records."""
    from ray.experimental.tqdm_ray import RAY_TQDM_MAGIC

    logger = logger or logging.getLogger(WORKERS)
    pid = data.get("pid")
    lines = data.get("lines") or []
    if pid == "autoscaler":
        from ray._private.worker import filter_autoscaler_events

        lines, prefix = filter_autoscaler_events(lines), "(autoscaler)"
    else:
        name = data.get("actor_name") or data.get("task_name")
        where = "" if data.get("ip") == data.get("localhost") else f", ip={data.get('ip')}"
        prefix = f"({name + ' ' if name else ''}pid={pid}{where})"
    for line in lines:
        if RAY_TQDM_MAGIC in line:  # a worker's progress bar update, not a line
            continue
        logger.info("%s %s", prefix, line)


def take_worker_output() -> None:
    """After ray.init: the workers' output goes to `log_worker_output` instead of Ray's printer,
    which still prints it whenever the job running is verbose (a sweep's jobs share one Ray)."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printers = [handle for name, handle in dispatcher.handlers if name == RAY_PRINT_HANDLER]
    if not printers or getattr(printers[0], "runner_chatter", False):
        return  # log_to_driver=False, or taken already
    ray_print = printers[0]

    def route(data: Dict[str, Any]) -> None:
        if _quiet:
            log_worker_output(data)
        else:
            ray_print(data)

    route.runner_chatter = True
    # Under Ray's name, so that ray.shutdown removes it as it removes its own.
    dispatcher.remove_handler(RAY_PRINT_HANDLER)
    dispatcher.add_handler(RAY_PRINT_HANDLER, route)


@contextlib.contextmanager
def around_ray_init() -> Iterator[None]:
    """Wraps ray.init: Ray's loggers (set up when ray is imported) are rerouted before it says
    anything, and once it is up, the workers' output is taken."""
    reroute()
    yield
    take_worker_output()
    reroute()
    if _quiet:
        log.info("Ray's and vLLM's own output goes to %s (log.verbose=true shows it here)", _log_file)


_added: Optional[logging.Handler] = None  # the file handler begin() added for the job, if any


def begin(verbose: bool, fallback_file: Optional[Path] = None) -> None:
    """Set a job's mode: verbose, or the chatter to the root logger's file (Hydra's job log),
    else to `fallback_file` (a file handler added for the job, replacing the one an earlier
    job of this process added). With no file at all the job stays verbose."""
    global _quiet, _log_file, _added
    root = logging.getLogger()
    _remove_added_file()
    files = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
    if not verbose and not files and fallback_file is not None:
        _added = _file_handler(Path(fallback_file))
        root.addHandler(_added)
        files = [_added]
    _quiet = bool(files) and not verbose
    _log_file = files[0].baseFilename if files else None
    if not _quiet:
        return
    for handler in root.handlers:
        if _is_terminal_handler(handler) and not any(isinstance(f, TerminalFilter) for f in handler.filters):
            handler.addFilter(TerminalFilter())
    logging.captureWarnings(True)
    if logging.getLoggerClass() is logging.Logger:
        logging.setLoggerClass(RoutedLogger)
    reroute()


def _remove_added_file() -> None:
    """The file handler `begin` added for an earlier job, if any: removed and closed."""
    global _added
    if _added is not None:
        logging.getLogger().removeHandler(_added)
        _added.close()
        _added = None


def _file_handler(path: Path) -> logging.Handler:
    from runner.cli import LOG_FORMAT
    from runner.redaction import RedactingFilter

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactingFilter())
    return handler


def end() -> None:
    """Undo `begin` for this process: the file handler it added, the logger class for loggers
    made from now on, and the captured warnings (for a caller that goes on after its jobs,
    such as a test session; a library logger already rerouted stays so)."""
    global _quiet, _log_file
    root = logging.getLogger()
    _remove_added_file()
    for handler in root.handlers:
        for terminal_filter in [f for f in handler.filters if isinstance(f, TerminalFilter)]:
            handler.removeFilter(terminal_filter)
    if logging.getLoggerClass() is RoutedLogger:
        logging.setLoggerClass(logging.Logger)
    if _quiet:
        logging.captureWarnings(False)
    _quiet, _log_file = False, None
