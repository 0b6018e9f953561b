"""The MLflow store a comparison reads: runs come back as DataFrames from `mlflow.search_runs`
(one row per run; columns run_id, status, start_time, params.*, metrics.*, tags.*)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List, Optional

import pandas as pd

from runner.compare.errors import CompareError

SWEEP_FILTER = "tags.`runner.role` = 'sweep'"
NEWEST_FIRST = ["attributes.start_time DESC"]


def quoted(value: str, option: str) -> str:
    """`value` as a string literal of MLflow's filter syntax."""
    if "'" in value or "\\" in value:
        raise CompareError(f"{option} {value!r}: quotes and backslashes are not allowed")
    return f"'{value}'"


class Store:
    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        if uri.startswith("sqlite:///"):
            # MLflow would silently create an empty store; a missing file is a wrong --uri.
            db = Path(uri[len("sqlite:///"):])
            if not db.is_file():
                raise CompareError(f"no MLflow store at {db}; run a job first or pass --uri (e.g. --uri sqlite:///path/to/mlflow.db)")
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)

    def experiment(self, name: str):
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            names = [e.name for e in self.client.search_experiments(max_results=20)]
            known = f" (experiments there: {', '.join(names)})" if names else " (it has no experiments)"
            raise CompareError(f"no experiment {name!r} at {self.uri}{known}; pass --experiment NAME or --uri")
        return experiment

    def experiment_name(self, experiment_id: str) -> str:
        return self.client.get_experiment(experiment_id).name

    def run(self, run_id: str, option: str):
        try:
            return self.client.get_run(run_id)
        except Exception as error:  # MlflowException: RESOURCE_DOES_NOT_EXIST or a malformed id
            raise CompareError(f"no run {run_id!r} at {self.uri}; check {option} ({type(error).__name__})") from None

    def search(self, experiment_ids: List[str], filter_string: str = "", order_by: Optional[List[str]] = None, max_results: int = 100_000) -> pd.DataFrame:
        import mlflow

        with _tracking_uri(self.uri):
            return mlflow.search_runs(experiment_ids, filter_string=filter_string, order_by=order_by, max_results=max_results)

    def recent_sweeps(self, experiment_id: str, n: int = 5) -> str:
        parents = self.search([experiment_id], SWEEP_FILTER, NEWEST_FIRST, n)
        ids = [tag(row, "runner.sweep_id") or row["run_id"] for _, row in parents.iterrows()]
        return f"recent sweeps: {', '.join(ids)}" if ids else "the experiment has no sweeps"

    def elsewhere(self, sweep_id: Optional[str] = None) -> str:
        """Where sweeps are when the named experiment has none (an overlay may set tracking.experiment)."""
        try:
            experiments = {e.experiment_id: e.name for e in self.client.search_experiments(max_results=1000)}
            query = SWEEP_FILTER + (f" and tags.`runner.sweep_id` = {quoted(sweep_id, '--sweep')}" if sweep_id else "")
            runs = self.search(list(experiments), query, NEWEST_FIRST, 50)
        except Exception:  # noqa: BLE001 - only a hint
            return ""
        names = list(dict.fromkeys(experiments[i] for i in runs.get("experiment_id", [])))
        return f"; sweeps are in experiment {', '.join(map(repr, names))} (pass --experiment {names[0]})" if names else ""


def tag(row, name: str) -> Optional[str]:
    """A tag of a search_runs row; None where the run lacks it."""
    value = row.get(f"tags.{name}")
    return value if isinstance(value, str) else None


@contextlib.contextmanager
def _tracking_uri(uri: str):
    """search_runs reads the process's tracking URI: point it at the store, then back."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
