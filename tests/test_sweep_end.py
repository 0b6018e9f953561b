"""The end of a sweep (SweepTracking.on_multirun_end) on a real SQLite store: a store that
fails there never ends the sweep with a traceback, and the parent run is closed wherever the
store still takes the write."""

import logging

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from runner import schema, sweep


def hydra_config(tmp_path, uri):
    return OmegaConf.create(
        {
            # Typed as the composed config's section is (run_schema).
            "tracking": OmegaConf.structured(schema.TrackingConfig(enabled=True, uri=uri, experiment="runner")),
            "paths": {"outputs": str(tmp_path / "outputs")},
            "hydra": {"sweep": {"dir": str(tmp_path / "outputs" / "multirun" / "s")}, "sweeper": {"params": None}, "overrides": {"task": ["prompt.max_tokens=8,16"]}},
        }
    )


@pytest.fixture
def started(tmp_path, monkeypatch):
    """A sweep whose parent run is open and whose two jobs ended (one finished, one failed)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(sweep.PARENT_RUN_ENV, raising=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = hydra_config(tmp_path, uri)
    callback = sweep.SweepTracking()
    callback.on_multirun_start(config)
    parent = sweep.current()["parent_run_id"]
    assert parent
    callback.results = ["finished", "failed"]
    return callback, config, parent, uri


def status(uri, run_id):
    mlflow.set_tracking_uri(uri)
    return MlflowClient().get_run(run_id).info.status


def test_a_store_that_fails_at_the_end_is_reported_with_how_to_close_the_parent(started, tmp_path, caplog):
    callback, config, parent, uri = started
    (tmp_path / "mlflow.db").write_bytes(b"not a database" * 100)  # the store breaks while the jobs ran
    with caplog.at_level(logging.ERROR, logger="runner.sweep"):
        callback.on_multirun_end(config)  # must not raise: Hydra would end the sweep with a traceback
    message = " ".join(r.getMessage() for r in caplog.records)
    assert parent in message and "set_terminated" in message and "FINISHED" in message
    assert "python -m runner.compare" in message and "--sweep" in message


def test_the_parent_is_closed_even_when_its_job_counts_cannot_be_logged(started, monkeypatch, caplog):
    callback, config, parent, uri = started

    def refuse(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("store refused the batch")

    # The job counts' write fails; closing the run would still go through.
    monkeypatch.setattr(MlflowClient, "log_batch", refuse)
    monkeypatch.setattr(MlflowClient, "log_metric", refuse)
    with caplog.at_level(logging.ERROR, logger="runner.sweep"):
        callback.on_multirun_end(config)
    monkeypatch.undo()
    assert status(uri, parent) == "FINISHED"
    assert "store refused the batch" in caplog.text


def test_a_sweep_whose_every_job_failed_closes_its_parent_as_failed(started):
    callback, config, parent, uri = started
    callback.results = ["failed", "failed"]
    callback.on_multirun_end(config)
    run = MlflowClient().get_run(parent)
    assert run.info.status == "FAILED" and run.data.metrics == {"jobs": 2.0, "jobs_failed": 2.0}


def test_a_sweep_hydra_cannot_compose_closes_its_parent_as_failed(tmp_path):
    """Seen: `-m prompt=nope,summarize` ended with Hydra's error before any job, and the parent
    run it had opened stayed RUNNING for ever."""
    from tests.e2e_helpers import run_cli

    done = run_cli(tmp_path, "-m", "prompt=nope,summarize")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "closed as FAILED" in done.stderr + done.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["runner"])
    assert list(runs["tags.runner.role"]) == ["sweep"] and list(runs["status"]) == ["FAILED"]
