"""Ray's and vLLM's own output goes to the run's log file, not the terminal, unless log.verbose=true
(runner.chatter). The real run's terminal and log are checked in tests/test_end_to_end.py."""

import logging
import sys

import pytest
from ray.llm._internal.common.utils.cloud_filesystem import s3_filesystem

from runner import chatter, redaction

PLANTED = "hf_PlantedTokenForTheTest0123456789abcd"
PLANTED_AWS = "wJalrXUtnFEMIK7MDENGbPxRfiCYPLANTED42"


@pytest.fixture
def job(tmp_path, capsys):
    """A root logger set up as Hydra sets it for a job (a terminal handler and the job's log
    file), put back afterwards with everything chatter changed. Returns what reads the terminal
    and the log's path; made in the test itself, where sys.stdout is the terminal capsys reads."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLoggerClass(), chatter._quiet, chatter._log_file, chatter._added)
    log_path = tmp_path / "__main__.log"
    opened = []

    def start():
        console, log_file = logging.StreamHandler(sys.stdout), logging.FileHandler(log_path)
        for handler in (console, log_file):
            handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
        root.handlers[:] = [console, log_file]
        root.setLevel(logging.INFO)
        opened.append(log_file)
        return lambda: capsys.readouterr().out, log_path

    yield start
    for handler in opened:
        handler.close()
    root.handlers[:], _, _, chatter._quiet, chatter._log_file, chatter._added = saved
    root.setLevel(saved[1])
    logging.setLoggerClass(saved[2])
    logging.captureWarnings(False)


def _library_logger(name):
    """A library's logger as Ray Data's is set up: its own terminal handler at INFO, the logger
    at DEBUG (for its own session file), no propagation."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(sys.stdout)
    handler.setLevel(logging.INFO)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger


class _ForwardsToStdout:
    def write(self, text):
        sys.stdout.write(text)

    def flush(self):
        sys.stdout.flush()


def _batch(*lines, **fields):
    return {"ip": "10.0.0.1", "localhost": "10.0.0.1", "pid": 4242, "actor_name": "MapWorker(MapBatches(vLLMEngineStageUDF))",
            "is_err": False, "job": "01000000", "lines": list(lines), **fields}


def test_worker_lines_become_records_prefixed_as_ray_prefixes_them(caplog):
    caplog.set_level(logging.INFO, logger=chatter.WORKERS)
    chatter.log_worker_output(_batch("INFO 11-28 [core.py:133] Initializing a V1 LLM engine", "__ray_tqdm_magic_token__{}"))
    chatter.log_worker_output(_batch("Downloading model", ip="10.0.0.2", actor_name=None, task_name="ReadJsonl"))
    assert [r.getMessage() for r in caplog.records] == [
        "(MapWorker(MapBatches(vLLMEngineStageUDF)) pid=4242) INFO 11-28 [core.py:133] Initializing a V1 LLM engine",
        "(ReadJsonl pid=4242, ip=10.0.0.2) Downloading model",
    ]
    assert {r.name for r in caplog.records} == {chatter.WORKERS}


S3_FILES = s3_filesystem.logger.name  # the logger Ray LLM reads a model folder in S3 with
NO_SUCH_KEY = "An error occurred (NoSuchKey) when calling the GetObject operation: The specified key does not exist."


@pytest.mark.parametrize("name, level, message, shown", [
    ("runner.app", logging.INFO, "input: 32 row(s)", True),
    ("runner.pipeline", logging.DEBUG, "anything of the runner's", True),
    ("hydra.core.utils", logging.INFO, "#1 : prompt=extract", True),
    ("workers", logging.INFO, "(MapWorker pid=1) INFO vLLM engine line", False),
    ("ray._private.worker", logging.INFO, "Started a local Ray instance.", False),
    ("ray.data._internal.execution.streaming_executor", logging.INFO, "Execution plan of Dataset ...", False),
    ("py.warnings", logging.WARNING, "FutureWarning: deprecated", False),
    ("vllm", logging.WARNING, "a vLLM warning", False),
    ("ray.data._internal.execution.streaming_executor", logging.ERROR, "Exception occurred in user code", True),
    (S3_FILES, logging.ERROR, f"Error reading s3://models/llama/hash: {NO_SUCH_KEY}", False),  # optional, and absent
    (S3_FILES, logging.ERROR, f"Error reading s3://models/llama/config.json: {NO_SUCH_KEY}", True),
    (S3_FILES, logging.ERROR, "Error reading s3://models/llama/hash: An error occurred (AccessDenied)", True),
    (chatter.PROGRESS_LOGGER, logging.INFO, "Total Progress: 16/32", True),
    (chatter.PROGRESS_LOGGER, logging.INFO, "MapBatches(vLLMEngineStageUDF): 16/32", False),
    (chatter.PROGRESS_LOGGER, logging.INFO, "MapBatches(ChatTemplateUDF): 32/?", False),
    (chatter.PROGRESS_LOGGER, logging.INFO, "  Tasks: 1; Actors: 1; Queued blocks: 0 (0.0B)", False),
    (chatter.PROGRESS_LOGGER, logging.INFO, "======= Running Dataset: dataset_3_0 =======", False),
])
def test_the_terminal_keeps_the_runners_lines_errors_and_progress(name, level, message, shown):
    record = logging.LogRecord(name, level, __file__, 1, message, None, None)
    assert chatter.on_terminal(record) is shown


def test_a_quiet_job_sends_library_and_worker_output_to_its_log_file_only(job):
    terminal, log_path = job()
    ray_logger = _library_logger("ray.fake_component")
    chatter.begin(verbose=False)
    assert chatter.quiet() and chatter.log_file() == str(log_path)
    logging.getLogger("runner.app").info("input: 32 row(s)")
    ray_logger.info("Started a local Ray instance.")
    ray_logger.debug("below the level its own handler had: nowhere")
    late = logging.getLogger("ray.llm.fake_late")  # set up after the job began, as Ray LLM's are
    late.addHandler(logging.StreamHandler(_ForwardsToStdout()))  # as MLflow's does
    late.propagate = False
    late.info("No cloud storage mirror configured")
    assigned = logging.getLogger("mlflow_like.fake")  # imported after the job began, handlers assigned whole
    assigned.handlers = [logging.StreamHandler(sys.stdout)]
    assigned.propagate = False
    assigned.warning("Creating initial database tables")
    chatter.log_worker_output(_batch("INFO 11-28 [loggers.py:335] Engine 000: Avg prompt throughput"))
    import warnings

    warnings.warn("a library's deprecation", FutureWarning)
    ray_logger.error("a worker died")
    shown, kept = terminal(), log_path.read_text()
    assert "input: 32 row(s)" in shown and "a worker died" in shown
    for chatter_line in ("Started a local Ray instance", "No cloud storage mirror", "database tables", "Engine 000", "deprecation"):
        assert chatter_line not in shown and chatter_line in kept, chatter_line
    assert "input: 32 row(s)" in kept and "nowhere" not in kept


def test_a_verbose_job_leaves_it_all_on_the_terminal(job):
    terminal, log_path = job()
    ray_logger = _library_logger("ray.fake_component_verbose")
    chatter.begin(verbose=True)
    ray_logger.info("Started a local Ray instance.")
    assert not chatter.quiet() and chatter.log_file() is None
    assert "Started a local Ray instance" in terminal() and ray_logger.handlers[0].stream is sys.stdout


def test_secrets_in_worker_output_are_masked_in_the_log_file(job, monkeypatch):
    _, log_path = job()
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_AWS)
    redaction.install_log_redaction()
    chatter.begin(verbose=False)
    chatter.log_worker_output(_batch(f"env: HF_TOKEN={PLANTED} AWS_SECRET_ACCESS_KEY={PLANTED_AWS}"))
    _library_logger("ray.fake_secretive").info("runtime_env {'HF_TOKEN': '%s'}", PLANTED)
    kept = log_path.read_text()
    assert "env: HF_TOKEN=***" in kept and PLANTED not in kept and PLANTED_AWS not in kept


def test_without_a_log_file_the_job_writes_its_own_local_one(job, tmp_path):
    job()
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
    chatter.begin(verbose=False, fallback_file=tmp_path / "run" / "resume.log")
    chatter.log_worker_output(_batch("vLLM engine line"))
    assert chatter.log_file() == str(tmp_path / "run" / "resume.log")
    assert "vLLM engine line" in (tmp_path / "run" / "resume.log").read_text()
    chatter.begin(verbose=False, fallback_file=tmp_path / "next" / "resume.log")  # the next job's replaces it
    assert [h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler)] == [str(tmp_path / "next" / "resume.log")]
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
    chatter._added.close()
    chatter._added = None
    chatter.begin(verbose=False)  # no file anywhere: nothing is hidden
    assert not chatter.quiet()


def test_ray_forwards_worker_output_to_the_log_or_its_own_printer_by_the_jobs_mode(job):
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed = []
    dispatcher.add_handler(chatter.RAY_PRINT_HANDLER, printed.append)
    try:
        chatter.take_worker_output()
        chatter.take_worker_output()  # once only
        assert [name for name, _ in dispatcher.handlers].count(chatter.RAY_PRINT_HANDLER) == 1
        _, log_path = job()
        chatter.begin(verbose=False)
        dispatcher.emit(_batch("quiet job's line"))
        chatter.begin(verbose=True)  # a later job of the same Ray (a sweep)
        dispatcher.emit(_batch("verbose job's line"))
        assert "quiet job's line" in log_path.read_text() and [b["lines"] for b in printed] == [["verbose job's line"]]
    finally:
        dispatcher.remove_handler(chatter.RAY_PRINT_HANDLER)


def test_the_summary_says_where_the_log_is(tmp_path):
    from runner import storage, summary
    from tests.configs import typed_config

    text = summary.render(typed_config(), storage.resolve(str(tmp_path)), {"rows_ok": 1}, outcome="x",
                          log_file="/runs/x/__main__.log")
    assert "  log         /runs/x/__main__.log (Ray's and vLLM's output too; log.verbose=true shows that here)" in text
