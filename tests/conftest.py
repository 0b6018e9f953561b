"""Shared fixtures. A test composes the run config with runner.config.compose, as the tools do."""

import os

import pytest

# Tests never reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on loopback for the session (tests/s3_server.py); `with s3.environ():`
    points pyarrow, boto3 and Ray workers started inside the block at it."""
    from tests.s3_server import s3_server

    with s3_server() as server:
        yield server


TASK_SWEEP_ROWS = 8


@pytest.fixture(scope="session")
def prompt_sweep(tmp_path_factory):
    """One real sweep on the CPU default over three prompts (summary, JSON extraction, labels),
    shared by the quality and structured-output tests and the sweep-bookkeeping tests. The
    three jobs share one engine (runner.warm_engine): started once, ~30-40 s on two cores."""
    import mlflow

    from tests.e2e_helpers import run_cli

    cwd = tmp_path_factory.mktemp("prompt_sweep")
    done = run_cli(cwd, "-m", "prompt=summarize,extract,classify", f"dataset.limit={TASK_SWEEP_ROWS}", "hydra.sweep.dir=outputs/multirun/e2e")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    mlflow.set_tracking_uri(f"sqlite:///{cwd}/outputs/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["runner"])
    return cwd, done, runs


@pytest.fixture(autouse=True)
def _chatter_mode_ends_with_each_test():
    """A test that runs a job in this process (app.run) sets the chatter's mode for the process,
    as a job does; the next test starts as a fresh process would."""
    yield
    from runner import chatter

    chatter.end()
