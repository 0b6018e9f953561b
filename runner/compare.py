"""Compare the jobs of a sweep from MLflow: which setting is fastest, which is cheapest, and,
where the jobs were scored (dataset.reference_column), which is the fastest that gives up
no more than a stated ROUGE tolerance against the best.

    python -m runner.compare                         # the newest sweep in experiment "runner"
    python -m runner.compare --sweep <sweep_id>      # one sweep; or --parent <run id>
    python -m runner.compare --all                   # every finished job in the experiment
    python -m runner.compare --uri http://mlflow.internal:5000 --experiment llama-l4
    python -m runner.compare --quality-metric rougeLsum_f_mean --quality-tolerance 0.02

Reads the MLflow contract the runner writes: a sweep is a parent run tagged
`runner.role=sweep` + `runner.sweep_id`, its jobs are nested runs tagged `runner.role=job`,
`runner.sweep_id`, `runner.overrides` and `runner.status`, with the flattened config as
params and the figures of runner.metrics as metrics. Prints one row per job, sorted by
the chosen throughput metric, writes a PNG (throughput and cost per 1M output tokens against
the swept setting, and throughput against quality when the jobs were scored) and logs both to the sweep's parent run as
`comparison.png` and `comparison.txt`. Only public MLflow client calls, so it works the
same on the local SQLite store and on a tracking server.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import math
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pandas as pd

from runner.errors import RunnerError

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "runner"
DEFAULT_METRIC = "output_tokens_per_s"
STEADY_METRIC = "steady_output_tokens_per_s"
COST_METRIC = "cost_per_1m_output_tokens_usd"
# Means of the per-row ROUGE F-measures (runner.quality), shown when any job has them.
QUALITY_FIGURES = ["rouge1_f_mean", "rouge2_f_mean", "rougeL_f_mean", "rougeLsum_f_mean"]
DEFAULT_QUALITY_METRIC = "rougeL_f_mean"
# ROUGE F is 0..1: the trade-off may give up 0.01 (one point) against the best job.
DEFAULT_QUALITY_TOLERANCE = 0.01
FIGURES = [
    "rows",
    "wall_s",
    "startup_s",
    "output_tokens_per_s",
    "steady_output_tokens_per_s",
    "rows_per_s",
    "cost_per_1m_output_tokens_usd",
    "cost_per_1k_rows_usd",
]
# Short headers for the printed table; the DataFrame keeps the metric names.
HEADERS = {
    "rows": "rows",
    "wall_s": "wall_s",
    "startup_s": "startup_s",
    "output_tokens_per_s": "out_tok/s",
    "steady_output_tokens_per_s": "steady_out_tok/s",
    "rows_per_s": "rows/s",
    "cost_per_1m_output_tokens_usd": "$/1M_out_tok",
    "cost_per_1k_rows_usd": "$/1k_rows",
    "rouge1_f_mean": "rouge1",
    "rouge2_f_mean": "rouge2",
    "rougeL_f_mean": "rougeL",
    "rougeLsum_f_mean": "rougeLsum",
}
LEGEND = (
    "out_tok/s, rows/s: over wall_s (end to end, start-up included); steady_out_tok/s: over "
    "generation_s; $ = hw.price_per_hour x replicas x wall_s"
)
QUALITY_LEGEND = "rouge*: mean ROUGE F-measure (0-1) of the rows against dataset.reference_column"
ZERO_COST_NOTE = "all costs are 0: hw price_per_hour is 0; cheapest = least wall_s per row"
# Bookkeeping params that may differ between jobs without being a setting.
NOT_SETTINGS = ("tracking.", "hydra.")


class CompareError(RunnerError):
    """A problem the user fixes with an option; the CLI prints it on one line, exit code 2."""


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per job (index: the job's label), best `metric` first
    fastest: Optional[str]  # label (the overrides string) of the fastest finished job
    cheapest: Optional[str]
    swept: List[str]  # param keys that vary, e.g. ["processor.batch_size"]
    plot_path: Optional[Path]
    text: str = ""  # the printed table and its summary
    metric: str = DEFAULT_METRIC
    experiment: str = DEFAULT_EXPERIMENT
    sweep_id: Optional[str] = None
    parent_run_id: Optional[str] = None
    fastest_run_id: Optional[str] = None
    cheapest_run_id: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    errors: Dict[str, str] = field(default_factory=dict)  # failed job label -> its runner.error tag
    logged_to_parent: bool = False
    quality_metric: str = DEFAULT_QUALITY_METRIC
    quality_tolerance: float = DEFAULT_QUALITY_TOLERANCE
    best_quality: Optional[str] = None  # None: no job was scored
    tradeoff: Optional[str] = None  # the fastest job within quality_tolerance of best_quality
    tradeoff_run_id: Optional[str] = None


# --------------------------------------------------------------------------- reading


def _client(uri: str):
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        # MLflow would silently create an empty store; a missing file is a wrong --uri.
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise CompareError(f"no MLflow store at {db}; run a job first or pass --uri (e.g. --uri sqlite:///path/to/mlflow.db)")
    return MlflowClient(tracking_uri=uri)


def _quoted(value: str, option: str) -> str:
    if "'" in value or "\\" in value:
        raise CompareError(f"{option} {value!r}: quotes and backslashes are not allowed")
    return f"'{value}'"


def _search(client, experiment_id: str, filter_string: str = "", order_by: Optional[List[str]] = None, limit: Optional[int] = None):
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, order_by=order_by,
            max_results=min(limit or 1000, 1000), page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token or (limit and len(runs) >= limit):
            return runs[:limit] if limit else runs


def _experiment(client, name: str, uri: str):
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        names = [e.name for e in client.search_experiments(max_results=20)]
        known = f" (experiments there: {', '.join(names)})" if names else " (it has no experiments)"
        raise CompareError(f"no experiment {name!r} at {uri}{known}; pass --experiment NAME or --uri")
    return experiment


def _recent_sweeps(client, experiment_id: str, n: int = 5) -> str:
    parents = _search(client, experiment_id, "tags.`runner.role` = 'sweep'", ["attributes.start_time DESC"], n)
    ids = [r.data.tags.get("runner.sweep_id", r.info.run_id) for r in parents]
    return f"recent sweeps: {', '.join(ids)}" if ids else "the experiment has no sweeps"


def _elsewhere(client, sweep_id: Optional[str] = None) -> str:
    """Where sweeps are when the named experiment has none (an overlay may set tracking.experiment)."""
    try:
        experiments = {e.experiment_id: e.name for e in client.search_experiments(max_results=1000)}
        query = "tags.`runner.role` = 'sweep'" + (f" and tags.`runner.sweep_id` = {_quoted(sweep_id, '--sweep')}" if sweep_id else "")
        runs = client.search_runs(list(experiments), query, order_by=["attributes.start_time DESC"], max_results=50)
    except Exception:  # noqa: BLE001 - only a hint
        return ""
    names = list(dict.fromkeys(experiments[r.info.experiment_id] for r in runs))
    return f"; sweeps are in experiment {', '.join(map(repr, names))} (pass --experiment {names[0]})" if names else ""


def _status(run) -> str:
    tagged = run.data.tags.get("runner.status")
    if tagged:
        return tagged
    return {"FINISHED": "finished", "FAILED": "failed", "KILLED": "failed"}.get(run.info.status, "running")


def _select(client, experiment, uri: str, sweep_id: Optional[str], parent_run_id: Optional[str], all_runs: bool):
    """(parent run or None, sweep id or None, job runs)."""
    exp_id, exp_name = experiment.experiment_id, experiment.name
    if all_runs:
        runs = [
            r for r in _search(client, exp_id, order_by=["attributes.start_time ASC"])
            if r.data.tags.get("runner.role") != "sweep"
            and ("runner.status" in r.data.tags or r.data.tags.get("runner.role") == "job")
            and _status(r) == "finished"
        ]
        if not runs:
            raise CompareError(f"no finished job in experiment {exp_name!r} at {uri}; run one first or pass --experiment")
        return None, None, runs

    parent = None
    if parent_run_id:
        try:
            parent = client.get_run(parent_run_id)
        except Exception as error:  # MlflowException: RESOURCE_DOES_NOT_EXIST or a malformed id
            raise CompareError(f"no run {parent_run_id!r} at {uri}; check --parent ({type(error).__name__})") from None
        if parent.info.experiment_id != exp_id:
            other = client.get_experiment(parent.info.experiment_id).name
            raise CompareError(f"run {parent_run_id} is in experiment {other!r}, not {exp_name!r}; pass --experiment {other}")
        tagged = parent.data.tags.get("runner.sweep_id")
        if sweep_id and tagged and tagged != sweep_id:
            raise CompareError(f"run {parent_run_id} belongs to sweep {tagged!r}, not {sweep_id!r}; pass only one of --sweep/--parent")
        sweep_id = tagged or sweep_id
    elif sweep_id:
        found = _search(
            client, exp_id,
            f"tags.`runner.role` = 'sweep' and tags.`runner.sweep_id` = {_quoted(sweep_id, '--sweep')}",
            ["attributes.start_time DESC"], 1,
        )
        parent = found[0] if found else None
    else:
        found = _search(client, exp_id, "tags.`runner.role` = 'sweep'", ["attributes.start_time DESC"], 1)
        if not found:
            raise CompareError(
                f"no sweep found in experiment {exp_name!r} at {uri}{_elsewhere(client)}; run a multirun "
                "(python -m runner -m ...) or pass --sweep ID, --parent RUN_ID or --all"
            )
        parent = found[0]
        sweep_id = parent.data.tags.get("runner.sweep_id")

    jobs: Dict[str, Any] = {}
    if parent is not None:
        for run in _search(client, exp_id, f"tags.`mlflow.parentRunId` = {_quoted(parent.info.run_id, '--parent')}"):
            jobs[run.info.run_id] = run
    if sweep_id:
        for run in _search(client, exp_id, f"tags.`runner.sweep_id` = {_quoted(sweep_id, '--sweep')}"):
            if run.data.tags.get("runner.role") != "sweep":
                jobs.setdefault(run.info.run_id, run)
    if not jobs:
        if parent is None:
            what, fix = f"no sweep {sweep_id!r}", f"pass --sweep with one of them, or --all{_elsewhere(client, sweep_id)}"
        else:
            what, fix = f"no job runs under parent run {parent.info.run_id}", "pass another --sweep/--parent, or --all"
        raise CompareError(f"{what} in experiment {exp_name!r} at {uri} ({_recent_sweeps(client, exp_id)}); {fix}")
    ordered = sorted(jobs.values(), key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return parent, sweep_id, ordered


# --------------------------------------------------------------------------- the table


def _value(text: Optional[str]) -> Any:
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


def _overrides(text: str) -> Dict[str, str]:
    """'processor.batch_size=8 +engine.extra.x=1 hw=l4' -> {key: value}, prefixes dropped."""
    pairs: Dict[str, str] = {}
    for item in (text or "").split():
        if "=" not in item:
            continue
        key, value = item.split("=", 1)
        pairs[key.lstrip("+~")] = value
    return pairs


def _numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def _depends_on(frame: pd.DataFrame, key: str, kept: List[str]) -> bool:
    """Whether `key`'s values are fixed by those of `kept` (e.g. hw.price_per_hour by hw.name)."""
    if not kept:
        return False
    keys = frame[kept].astype(str)
    return bool((frame[key].astype(str).groupby([keys[k] for k in kept]).nunique() <= 1).all())


def _swept(frame: pd.DataFrame, params: Dict[str, Dict[str, Any]], overrides: Dict[str, Dict[str, str]]) -> List[str]:
    """Param keys that vary among the jobs: overridden keys first, then other differing
    params not already implied by the ones kept (a group choice such as hw=l4 changes many)."""
    all_keys = sorted({k for p in params.values() for k in p})

    def differs(key: str) -> bool:
        return frame[key].dropna().astype(str).nunique() > 1

    chosen: List[str] = []
    override_keys = list(dict.fromkeys(k for o in overrides.values() for k in o))
    for key in override_keys:
        column = key if key in all_keys else (f"{key}.name" if f"{key}.name" in all_keys else key)
        if column in frame and differs(column) and column not in chosen:
            chosen.append(column)
    others = [k for k in all_keys if k not in chosen and not k.startswith(NOT_SETTINGS) and differs(k)]
    # Names first (hw.name before hw.price_per_hour), then the fewest distinct values.
    others.sort(key=lambda k: (not k.endswith(".name"), frame[k].dropna().astype(str).nunique(), k))
    for key in others:
        if not _depends_on(frame, key, chosen):
            chosen.append(key)
    return chosen


def _lower_is_better(metric: str) -> bool:
    """Durations (latency_p50_s, wall_s) and costs are better small; rates are better large."""
    return metric.startswith("cost") or (metric.endswith("_s") and not metric.endswith("_per_s"))


def _build(runs, metric: str, forced: Optional[List[str]]):
    params = {r.info.run_id: {k: _value(v) for k, v in r.data.params.items()} for r in runs}
    overrides = {r.info.run_id: _overrides(r.data.tags.get("runner.overrides", "")) for r in runs}
    records = []
    for run in runs:
        rid = run.info.run_id
        status = _status(run)
        record: Dict[str, Any] = {"run_id": rid, "status": status, **params[rid]}
        # An override that is no param (params not logged) still shows its value.
        for key, value in overrides[rid].items():
            if key not in record and f"{key}.name" not in record:
                record[key] = _value(value)
        for name in dict.fromkeys([*FIGURES, metric, "cost_usd", *QUALITY_FIGURES]):
            value = run.data.metrics.get(name) if status == "finished" else None
            record[name] = float("nan") if value is None else float(value)
        records.append(record)
    frame = pd.DataFrame.from_records(records)

    if forced:
        swept = []
        for key in forced:
            key = key[len("params."):] if key.startswith("params.") else key
            if key not in frame.columns or key in FIGURES or key in ("run_id", "status", "cost_usd", metric):
                close = difflib.get_close_matches(key, sorted({k for p in params.values() for k in p}), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise CompareError(f"no param {key!r} in the jobs' params{hint}; fix --param")
            swept.append(key)
    else:
        swept = _swept(frame, params, overrides)

    # Overrides every job shares (+experiment=..., model=...) say nothing about one job.
    tagged = [r.data.tags["runner.overrides"].split() for r in runs if r.data.tags.get("runner.overrides", "").strip()]
    common = set.intersection(*map(set, tagged)) if len(tagged) > 1 else set()
    labels = []
    for run, record in zip(runs, records):
        # The overrides string names a job, unless it lacks a swept key (e.g. --all across sweeps).
        items = run.data.tags.get("runner.overrides", "").split()
        text = " ".join(i for i in items if i not in common) or " ".join(items)
        given = _overrides(text)
        if not text or not all(k in given or (k.endswith(".name") and k[: -len(".name")] in given) for k in swept):
            text = " ".join(f"{k}={record.get(k)}" for k in swept) or text or run.info.run_name or run.info.run_id[:8]
        labels.append(text)
    counts = pd.Series(labels).value_counts()
    labels = [f"{lab} [{r.info.run_id[:8]}]" if counts[lab] > 1 else lab for lab, r in zip(labels, runs)]
    frame.index = pd.Index(labels, name="job")

    figures = list(FIGURES)
    if metric not in figures:
        figures.insert(figures.index("startup_s") + 1, metric)
    scored = frame[QUALITY_FIGURES].notna().any()
    figures += [q for q in QUALITY_FIGURES if scored.any() and q not in figures]
    table = frame[[*swept, "status", *figures]].copy()
    table["mark"] = ""
    table["run_id"] = frame["run_id"]
    errors = {lab: r.data.tags.get("runner.error", "") for lab, r in zip(labels, runs) if _status(r) == "failed"}
    return table, swept, frame["cost_usd"], errors


def _rank(table: pd.DataFrame, metric: str, cost_usd: pd.Series):
    """Sort by the metric (failed jobs last) and fill the mark column; returns (fastest, cheapest, notes)."""
    ascending = _lower_is_better(metric)
    finished = table["status"] == "finished"
    key = table[metric].where(finished)
    order = key.sort_values(ascending=ascending, na_position="last", kind="stable").index
    table = table.loc[order]
    finished = table["status"] == "finished"
    notes: List[str] = []

    candidates = table[finished & table[metric].notna()]
    if candidates.empty:
        raise CompareError(
            f"no finished job has metric {metric!r}; pass --metric one of: {', '.join(FIGURES)}"
            if finished.any() else "no finished job in this sweep (all failed or still running); pick another with --sweep or use --all"
        )
    fastest = candidates.index[0]

    done = table[finished]
    costs = done[COST_METRIC].dropna()
    spent = cost_usd.loc[done.index].dropna()
    per_row = (done["wall_s"] / done["rows"].where(done["rows"] > 0)).dropna()
    if len(costs) and (costs != 0).any():
        lowest = costs[costs == costs.min()].index
        # Ties (e.g. several jobs on a free CPU among paid GPUs): the least wall_s per row.
        cheapest = per_row.loc[per_row.index.intersection(lowest)].idxmin() if per_row.index.intersection(lowest).size > 1 else lowest[0]
    else:
        if len(costs) or (len(spent) and (spent == 0).all()):
            notes.append(ZERO_COST_NOTE)
        else:
            notes.append("no cost figures logged; cheapest = least wall_s per row")
        cheapest = per_row.idxmin() if len(per_row) else None

    table.loc[fastest, "mark"] = "fastest"
    if cheapest is not None:
        table.loc[cheapest, "mark"] = "fastest, cheapest" if cheapest == fastest else "cheapest"
    return table, fastest, cheapest, notes


def _add_mark(table: pd.DataFrame, label: str, mark: str) -> None:
    current = table.loc[label, "mark"]
    table.loc[label, "mark"] = f"{current}, {mark}" if current else mark


def _tradeoff(table: pd.DataFrame, metric: str, quality_metric: str, tolerance: float):
    """(best quality, trade-off) labels: the trade-off is the job best by `metric` among the
    finished jobs whose quality is within `tolerance` of the best; (None, None) if none was scored."""
    if quality_metric not in table.columns:
        return None, None
    scored = table[(table["status"] == "finished") & table[quality_metric].notna() & table[metric].notna()]
    if scored.empty:
        return None, None
    best = scored[quality_metric].idxmax()
    near = scored[scored[quality_metric] >= scored.loc[best, quality_metric] - tolerance - 1e-12]
    tradeoff = near[metric].idxmin() if _lower_is_better(metric) else near[metric].idxmax()
    _add_mark(table, best, "best quality")
    _add_mark(table, tradeoff, "trade-off")
    return best, tradeoff


# --------------------------------------------------------------------------- text


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** -digits * 10:
            return f"{value:.3g}"
        return f"{value:,.{digits}f}"
    return str(value)


def _cost(value: Any) -> str:
    return "0" if value == 0 else _fmt(value, 4)


def format_table(comparison: Comparison) -> str:
    """The table as printed: a header line, the table, the winners and notes."""
    table = comparison.table
    shown = table.drop(columns=["run_id"], errors="ignore").copy()
    if not comparison.swept:
        shown.insert(0, "job", shown.index)
    formatters = {}
    for column in shown.columns:
        if column == "rows":
            formatters[column] = lambda v: "-" if pd.isna(v) else f"{int(v):,}"
        elif column.startswith("cost"):
            formatters[column] = _cost
        elif column in QUALITY_FIGURES:
            formatters[column] = lambda v: _fmt(v, 3)
        elif column in FIGURES or column == comparison.metric:
            formatters[column] = lambda v: _fmt(v, 1)
        else:
            formatters[column] = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    shown = shown.rename(columns=HEADERS)
    formatters = {HEADERS.get(k, k): f for k, f in formatters.items()}
    body = shown.to_string(index=False, formatters=formatters, justify="right", na_rep="-")

    n_failed = int((table["status"] == "failed").sum())
    if comparison.sweep_id or comparison.parent_run_id:
        scope = f"sweep {comparison.sweep_id or '-'} (parent run {comparison.parent_run_id or '-'})"
    else:
        scope = "all finished jobs"
    lines = [
        f"{scope}, experiment {comparison.experiment!r}: {len(table)} jobs"
        + (f", {n_failed} failed" if n_failed else "")
        + f"; swept: {', '.join(comparison.swept) or 'nothing varies'}; sorted by {comparison.metric}"
        + (" (lowest first)" if _lower_is_better(comparison.metric) else " (highest first)"),
        body,
        "",
    ]
    if comparison.fastest is not None:
        row = table.loc[comparison.fastest]
        lines.append(f"fastest:  {comparison.fastest}  ({comparison.metric} {_fmt(row[comparison.metric], 1)})")
    if comparison.cheapest is not None:
        row = table.loc[comparison.cheapest]
        lines.append(
            f"cheapest: {comparison.cheapest}  (${_cost(row[COST_METRIC])} per 1M output tokens, "
            f"{_fmt(row['wall_s'] / row['rows'] if row['rows'] else float('nan'), 3)} wall_s per row)"
        )
    if comparison.best_quality is not None:
        q, best = comparison.quality_metric, table.loc[comparison.best_quality]
        lines.append(f"best quality: {comparison.best_quality}  ({q} {_fmt(best[q], 3)})")
        row = table.loc[comparison.tradeoff]
        gap = best[q] - row[q]
        lines.append(
            f"trade-off: {comparison.tradeoff}  (best {comparison.metric} within {comparison.quality_tolerance:g} {q} of the best: "
            f"{_fmt(row[comparison.metric], 1)} {comparison.metric}, {q} {_fmt(row[q], 3)}"
            + (f", {gap:.3f} under the best)" if gap > 0 else ", the best)")
        )
    lines.extend(comparison.notes)
    for label in table.index[table["status"] == "failed"]:
        error = comparison.errors.get(label, "")
        lines.append(f"failed:   {label}" + (f": {error.splitlines()[0][:160]}" if error else ""))
    lines.append(LEGEND)
    if comparison.best_quality is not None:
        lines.append(QUALITY_LEGEND)
    return "\n".join(lines)


# --------------------------------------------------------------------------- the plot


def plot(comparison: Comparison, out_png: Path) -> Path:
    """Throughput (metric and steady state) and cost per 1M output tokens against the swept
    setting; where jobs were scored, a third panel: throughput against quality, a point a job."""
    from matplotlib.figure import Figure  # no pyplot: no global backend; savefig renders with Agg

    table = comparison.table
    done = table[(table["status"] == "finished") & table[comparison.metric].notna()]
    swept = comparison.swept
    numeric = len(swept) == 1 and _numeric(list(done[swept[0]]))
    if numeric:
        done = done[done[swept[0]].notna()].sort_values(swept[0], kind="stable")
        x = done[swept[0]].astype(float).to_numpy()
        xlabel = swept[0]
    else:
        x = list(range(len(done)))
        ticks = [str(v) for v in done[swept[0]]] if len(swept) == 1 else list(done.index)
        xlabel = swept[0] if len(swept) == 1 else ("overrides" if swept else "job")

    scored = comparison.best_quality is not None
    fig = Figure(figsize=(16.5 if scored else 11, 4.6), layout="constrained")
    throughput, cost, *rest = fig.subplots(1, 3 if scored else 2)
    if scored:
        _quality_panel(rest[0], comparison)
    series = [(comparison.metric, f"{comparison.metric} (end to end)")]
    if comparison.metric != STEADY_METRIC:
        series.append((STEADY_METRIC, f"{STEADY_METRIC} (steady state)"))
    zero = ZERO_COST_NOTE in comparison.notes
    # All costs 0 (a free CPU): a flat line says nothing; show what "cheapest" then means.
    spend = done["wall_s"] / done["rows"].where(done["rows"] > 0) if zero else done[COST_METRIC]
    if numeric:
        for column, label in series:
            throughput.plot(x, done[column], marker="o", label=label)
        cost.plot(x, spend, marker="o", color="tab:red")
    else:
        width = 0.8 / len(series)
        for i, (column, label) in enumerate(series):
            throughput.bar([p + (i - (len(series) - 1) / 2) * width for p in x], done[column], width, label=label)
        cost.bar(x, spend, 0.6, color="tab:red")
    throughput.set_title(f"throughput\nfastest: {comparison.fastest}", fontsize="medium")
    throughput.set_ylabel("per second")
    throughput.legend(fontsize="small")
    if zero:
        cost.set_title(f"all costs are 0 (hw price_per_hour is 0): wall_s per row instead\ncheapest: {comparison.cheapest}", fontsize="medium")
        cost.set_ylabel("wall_s per row")
    else:
        cost.set_title(f"cost per 1M output tokens\ncheapest: {comparison.cheapest}", fontsize="medium")
        cost.set_ylabel("USD per 1M output tokens")
    for ax in (throughput, cost):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if numeric:
            values = sorted(set(x))
            if min(values) > 0 and max(values) / min(values) >= 8:
                ax.set_xscale("log", base=2)  # batch sizes and sequence counts are powers of two
            ax.set_xticks(values)
            ax.set_xticklabels([f"{v:g}" for v in values])
            ax.minorticks_off()
        else:
            ax.set_xticks(x)
            ax.set_xticklabels(ticks, rotation=20 if len(swept) > 1 or len(done) > 4 else 0, ha="right" if len(swept) > 1 else "center", fontsize="small")
        ax.set_ylim(bottom=0)
    scope = f"sweep {comparison.sweep_id}" if comparison.sweep_id else ("parent run " + comparison.parent_run_id if comparison.parent_run_id else "all finished jobs")
    fig.suptitle(f"{comparison.experiment}: {scope}")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def _quality_panel(ax, comparison: Comparison) -> None:
    table, q, metric = comparison.table, comparison.quality_metric, comparison.metric
    done = table[(table["status"] == "finished") & table[q].notna() & table[metric].notna()]
    ax.scatter(done[q], done[metric], color="tab:blue", zorder=3)
    for label, row in done.iterrows():
        short = " ".join(item.split("=", 1)[-1] for item in str(label).split()) if comparison.swept else str(label)
        ax.annotate(short, (row[q], row[metric]), textcoords="offset points", xytext=(5, 4), fontsize="small")
    best = table.loc[comparison.best_quality, q]
    # The band the trade-off is chosen in: within the tolerance of the best quality.
    ax.axvspan(best - comparison.quality_tolerance, best, color="tab:green", alpha=0.15, label=f"within {comparison.quality_tolerance:g} of the best")
    pick = table.loc[comparison.tradeoff]
    ax.scatter([pick[q]], [pick[metric]], s=180, marker="*", color="tab:green", zorder=4, label="trade-off")
    ax.set_title(f"throughput against quality\ntrade-off: {comparison.tradeoff}", fontsize="medium")
    ax.margins(x=0.15, y=0.1)  # room for the labels beside the points
    ax.set_xlabel(f"{q} (ROUGE F, higher is better)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _default_png(uri: str, name: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "compare" / f"{name}.png"  # outputs/compare/
    return Path(tempfile.mkdtemp(prefix="runner-compare-")) / f"{name}.png"


def _log_to_parent(client, run_id: str, png: Path, text: str) -> None:
    with tempfile.TemporaryDirectory(prefix="runner-compare-") as tmp:
        shutil.copyfile(png, Path(tmp) / "comparison.png")
        (Path(tmp) / "comparison.txt").write_text(text + "\n")
        client.log_artifact(run_id, str(Path(tmp) / "comparison.png"))
        client.log_artifact(run_id, str(Path(tmp) / "comparison.txt"))


# --------------------------------------------------------------------------- API and CLI


def compare(
    uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    sweep_id: Optional[str] = None,
    parent_run_id: Optional[str] = None,
    params: Optional[List[str]] = None,
    metric: str = DEFAULT_METRIC,
    out_png: Optional[Path] = None,
    log_to_parent: bool = True,
    all_runs: bool = False,
    quality_metric: str = DEFAULT_QUALITY_METRIC,
    quality_tolerance: float = DEFAULT_QUALITY_TOLERANCE,
) -> Comparison:
    """Compare one sweep's jobs (the newest sweep unless `sweep_id`/`parent_run_id`; every
    finished job of the experiment with `all_runs`). Raises CompareError for user errors."""
    if quality_metric not in QUALITY_FIGURES:
        raise CompareError(f"--quality-metric {quality_metric!r} is not a quality figure; pass one of: {', '.join(QUALITY_FIGURES)}")
    if not (quality_tolerance >= 0):
        raise CompareError(f"--quality-tolerance {quality_tolerance}: pass a ROUGE difference >= 0 (e.g. 0.01)")
    client = _client(uri)
    exp = _experiment(client, experiment, uri)
    parent, sweep_id, runs = _select(client, exp, uri, sweep_id, parent_run_id, all_runs)
    table, swept, cost_usd, errors = _build(runs, metric, params)
    table, fastest, cheapest, notes = _rank(table, metric, cost_usd)
    best_quality, tradeoff = _tradeoff(table, metric, quality_metric, quality_tolerance)
    comparison = Comparison(
        table=table, fastest=fastest, cheapest=cheapest, swept=swept, plot_path=None,
        metric=metric, experiment=experiment, sweep_id=sweep_id,
        parent_run_id=parent.info.run_id if parent is not None else None,
        fastest_run_id=table.loc[fastest, "run_id"],
        cheapest_run_id=table.loc[cheapest, "run_id"] if cheapest is not None else None,
        notes=notes, errors=errors, quality_metric=quality_metric, quality_tolerance=quality_tolerance,
        best_quality=best_quality, tradeoff=tradeoff, tradeoff_run_id=table.loc[tradeoff, "run_id"] if tradeoff is not None else None,
    )
    comparison.text = format_table(comparison)
    name = sweep_id or (comparison.parent_run_id or "all")
    comparison.plot_path = plot(comparison, Path(out_png) if out_png else _default_png(uri, name))
    if parent is not None and log_to_parent:
        try:
            _log_to_parent(client, parent.info.run_id, comparison.plot_path, comparison.text)
            comparison.logged_to_parent = True
        except Exception as error:  # noqa: BLE001 - the comparison itself is done; say why the log failed
            comparison.notes.append(f"could not log to parent run {parent.info.run_id}: {type(error).__name__}: {error}")
            log.warning(comparison.notes[-1])
    return comparison


def main(argv: Optional[List[str]] = None) -> int:
    from runner.tracking import default_uri

    parser = argparse.ArgumentParser(
        prog="python -m runner.compare",
        description="Compare the jobs of a sweep from MLflow: fastest and cheapest setting, and the best quality/throughput trade-off.",
    )
    parser.add_argument("--uri", default=None, help="MLflow tracking URI (default: the runner's store, sqlite:///<cwd>/outputs/mlflow.db)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (tracking.experiment; default: runner)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", metavar="SWEEP_ID", help="the sweep's runner.sweep_id (default: the newest sweep)")
    which.add_argument("--parent", metavar="RUN_ID", help="the sweep's parent run id")
    which.add_argument("--all", action="store_true", help="every finished job of the experiment")
    parser.add_argument("--param", nargs="+", action="extend", metavar="KEY", help="swept param keys to show (default: those that differ)")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help=f"what fastest means: highest rate wins, lowest duration (*_s, not *_per_s) wins (default: {DEFAULT_METRIC})")
    parser.add_argument("--quality-metric", default=DEFAULT_QUALITY_METRIC, choices=QUALITY_FIGURES,
                        help=f"the quality figure of the trade-off (default: {DEFAULT_QUALITY_METRIC})")
    parser.add_argument("--quality-tolerance", type=float, default=DEFAULT_QUALITY_TOLERANCE, metavar="ROUGE",
                        help="trade-off: the fastest job whose quality is at most this far under the best "
                        f"(a ROUGE F difference, 0-1; default {DEFAULT_QUALITY_TOLERANCE})")
    parser.add_argument("--out", type=Path, metavar="PATH.png", help="where to write the plot (default: outputs/compare/<sweep>.png beside a SQLite store)")
    parser.add_argument("--no-log", action="store_true", help="do not log comparison.png/.txt to the parent run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    uri = args.uri or default_uri(Path("outputs"))
    try:
        result = compare(
            uri, args.experiment, sweep_id=args.sweep, parent_run_id=args.parent, params=args.param,
            metric=args.metric, out_png=args.out, log_to_parent=not args.no_log, all_runs=args.all,
            quality_metric=args.quality_metric, quality_tolerance=args.quality_tolerance,
        )
    except CompareError as error:
        print(f"runner.compare: {error}", file=sys.stderr)
        return 2
    print(result.text)
    print(f"plot: {result.plot_path}")
    if result.logged_to_parent:
        print(f"logged comparison.png and comparison.txt to parent run {result.parent_run_id}")
    for note in result.notes:
        if note.startswith("could not log"):
            print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
