"""One row per job from the selected runs: the swept settings, the job's status, the figures,
a mark column (filled by rank) and the run id; the index is the job's label."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from runner.compare import overrides, swept as swept_settings
from runner.compare.figures import FIGURES, QUALITY_FIGURES
from runner.compare.select import FINISHED, status
from runner.compare.store import tag

# Columns read from each job's tags, shown after its status (column -> tag); a tag a job
# lacks shows as "-". Jobs with the same engine id shared one engine (runner.warm_engine).
TAG_COLUMNS: Dict[str, str] = {"engine": "runner.engine"}


@dataclass
class JobTable:
    table: pd.DataFrame
    swept: List[str]  # param keys that vary, e.g. ["processor.batch_size"]
    cost_usd: pd.Series  # each job's cost, to tell a free machine from a missing figure
    errors: Dict[str, str]  # failed job's label -> its runner.error tag


def typed(text: Optional[str]) -> Any:
    """A param's text as MLflow stores it -> int / float / None / the text."""
    if text is None or text == "None":
        return None
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def build(jobs: pd.DataFrame, metric: str, forced: Optional[Sequence[str]], parent_params: Optional[Dict[str, str]]) -> JobTable:
    rows = [row for _, row in jobs.iterrows()]
    job_overrides = [overrides.values(tag(row, "runner.overrides")) for row in rows]
    records = [_record(row, given, metric) for row, given in zip(rows, job_overrides)]
    frame = pd.DataFrame.from_records(records)
    param_names = [k[len("params."):] for k in jobs.columns if k.startswith("params.") and jobs[k].notna().any()]
    if forced:
        swept = swept_settings.forced(forced, frame, param_names, [*FIGURES, "run_id", "status", "cost_usd", metric])
    else:
        swept = swept_settings.swept(frame, param_names, job_overrides, parent_params)
    labels = job_labels(rows, records, swept)
    frame.index = pd.Index(labels, name="job")
    # A tag no job carries (runs from before it existed) adds no column.
    tag_columns = [column for column in TAG_COLUMNS if frame[column].notna().any()]
    table = frame[[*swept, "status", *tag_columns, *shown_figures(frame, metric)]].copy()
    table["mark"] = ""
    table["run_id"] = frame["run_id"]
    errors = {label: tag(row, "runner.error") or "" for label, row in zip(labels, rows) if status(row) == "failed"}
    return JobTable(table, swept, frame["cost_usd"], errors)


def _record(row, given: Dict[str, Any], metric: str) -> Dict[str, Any]:
    state = status(row)
    record: Dict[str, Any] = {"run_id": row["run_id"], "status": state}
    record.update({k[len("params."):]: typed(v) for k, v in row.items() if k.startswith("params.") and isinstance(v, str)})
    # An override that is no param (params not logged) still shows its value.
    record.update({k: v for k, v in given.items() if swept_settings.column_for(k, record) is None})
    record.update({column: tag(row, name) for column, name in TAG_COLUMNS.items()})
    for name in dict.fromkeys([*FIGURES, metric, "cost_usd", *QUALITY_FIGURES]):
        value = row.get(f"metrics.{name}") if state == FINISHED else None
        record[name] = float("nan") if value is None else float(value)
    return record


def shown_figures(frame: pd.DataFrame, metric: str) -> List[str]:
    figures = list(FIGURES)
    if metric not in figures:
        figures.insert(figures.index("startup_s") + 1, metric)
    if frame[QUALITY_FIGURES].notna().any().any():
        figures += [q for q in QUALITY_FIGURES if q not in figures]
    return figures


def job_labels(rows: Sequence[Any], records: Sequence[Dict[str, Any]], swept: Sequence[str]) -> List[str]:
    """Each job's overrides less those every job shares (+experiment=..., model=...); where
    they do not name every swept setting (--all across sweeps), the swept settings' values.
    A label two jobs share gets the run id's start."""
    items = [overrides.split(tag(row, "runner.overrides")) for row in rows]
    tagged = [set(i) for i in items if i]
    common = set.intersection(*tagged) if len(tagged) > 1 else set()
    labels = []
    for row, record, own in zip(rows, records, items):
        text = " ".join(i for i in own if i not in common) or " ".join(own)
        given = overrides.values(text)
        if not text or not all(k in given or (k.endswith(".name") and k[: -len(".name")] in given) for k in swept):
            text = " ".join(f"{k}={record.get(k)}" for k in swept) or text or tag(row, "mlflow.runName") or row["run_id"][:8]
        labels.append(text)
    counts = pd.Series(labels).value_counts()
    return [f"{label} [{row['run_id'][:8]}]" if counts[label] > 1 else label for label, row in zip(labels, rows)]
