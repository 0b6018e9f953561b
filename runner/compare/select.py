"""Which runs a comparison covers: one sweep's jobs (the newest sweep, or one named by its id
or its parent run), or every finished job of the experiment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import pandas as pd

from runner.compare.errors import CompareError
from runner.compare.store import NEWEST_FIRST, SWEEP_FILTER, Store, quoted, tag

FINISHED = "finished"
# A job's outcome when it has no runner.status tag, from MLflow's own run status.
RUN_STATUS = {"FINISHED": FINISHED, "FAILED": "failed", "KILLED": "failed"}


@dataclass
class Parent:
    """A sweep's parent run, with the multirun's overrides it stores as params."""

    run_id: str
    sweep_id: Optional[str]
    params: Dict[str, str] = field(default_factory=dict)


@dataclass
class Selection:
    parent: Optional[Parent]
    sweep_id: Optional[str]
    jobs: pd.DataFrame  # search_runs rows, oldest first


def status(row) -> str:
    return tag(row, "runner.status") or RUN_STATUS.get(row.get("status"), "running")


def select(store: Store, experiment, sweep_id: Optional[str], parent_run_id: Optional[str], all_runs: bool) -> Selection:
    if all_runs:
        return Selection(None, None, _all_finished(store, experiment))
    parent, sweep_id = _parent(store, experiment, sweep_id, parent_run_id)
    jobs = _jobs(store, experiment.experiment_id, parent, sweep_id)
    if jobs.empty:
        if parent is None:
            what, fix = f"no sweep {sweep_id!r}", f"pass --sweep with one of them, or --all{store.elsewhere(sweep_id)}"
        else:
            what, fix = f"no job runs under parent run {parent.run_id}", "pass another --sweep/--parent, or --all"
        raise CompareError(f"{what} in experiment {experiment.name!r} at {store.uri} ({store.recent_sweeps(experiment.experiment_id)}); {fix}")
    return Selection(parent, sweep_id, jobs)


def _all_finished(store: Store, experiment) -> pd.DataFrame:
    runs = store.search([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    # Jobs carry runner.status (or the job role); other runs (a bench, a sweep's parent) do not count.
    keep = [
        tag(row, "runner.role") != "sweep" and (tag(row, "runner.status") is not None or tag(row, "runner.role") == "job") and status(row) == FINISHED
        for _, row in runs.iterrows()
    ]
    if not any(keep):
        raise CompareError(f"no finished job in experiment {experiment.name!r} at {store.uri}; run one first or pass --experiment")
    return runs[keep].reset_index(drop=True)


def _parent(store: Store, experiment, sweep_id: Optional[str], parent_run_id: Optional[str]):
    """(the sweep's parent run or None, the sweep's id)."""
    if parent_run_id:
        parent = _parent_by_id(store, experiment, parent_run_id, sweep_id)
        return parent, parent.sweep_id or sweep_id
    query = SWEEP_FILTER + (f" and tags.`runner.sweep_id` = {quoted(sweep_id, '--sweep')}" if sweep_id else "")
    found = store.search([experiment.experiment_id], query, NEWEST_FIRST, 1)
    if found.empty and not sweep_id:
        raise CompareError(
            f"no sweep found in experiment {experiment.name!r} at {store.uri}{store.elsewhere()}; run a multirun "
            "(python -m runner -m ...) or pass --sweep ID, --parent RUN_ID or --all"
        )
    if found.empty:
        return None, sweep_id
    row = found.iloc[0]
    params = {k[len("params."):]: v for k, v in row.items() if k.startswith("params.") and isinstance(v, str)}
    parent = Parent(row["run_id"], tag(row, "runner.sweep_id"), params)
    return parent, parent.sweep_id or sweep_id


def _parent_by_id(store: Store, experiment, run_id: str, sweep_id: Optional[str]) -> Parent:
    run = store.run(run_id, "--parent")
    if run.info.experiment_id != experiment.experiment_id:
        other = store.experiment_name(run.info.experiment_id)
        raise CompareError(f"run {run_id} is in experiment {other!r}, not {experiment.name!r}; pass --experiment {other}")
    tagged = run.data.tags.get("runner.sweep_id")
    if sweep_id and tagged and tagged != sweep_id:
        raise CompareError(f"run {run_id} belongs to sweep {tagged!r}, not {sweep_id!r}; pass only one of --sweep/--parent")
    return Parent(run_id, tagged, dict(run.data.params))


def _jobs(store: Store, experiment_id: str, parent: Optional[Parent], sweep_id: Optional[str]) -> pd.DataFrame:
    """The runs nested under the parent and those tagged with the sweep's id (a job logged
    while the parent could not be reached carries only the id)."""
    found = []
    if parent is not None:
        found.append(store.search([experiment_id], f"tags.`mlflow.parentRunId` = {quoted(parent.run_id, '--parent')}"))
    if sweep_id:
        tagged = store.search([experiment_id], f"tags.`runner.sweep_id` = {quoted(sweep_id, '--sweep')}")
        found.append(tagged[[tag(row, "runner.role") != "sweep" for _, row in tagged.iterrows()]])
    found = [frame for frame in found if not frame.empty]
    if not found:
        return pd.DataFrame()
    jobs = pd.concat(found, ignore_index=True).drop_duplicates("run_id")
    return jobs.sort_values(["start_time", "run_id"], kind="stable").reset_index(drop=True)
