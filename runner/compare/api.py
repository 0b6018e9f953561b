"""`compare()`: select the runs, build the table, rank it, write the text and the plot, and
attach both to the sweep's parent run (through runner.tracking)."""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path
from typing import List, Optional

from runner import tracking
from runner.compare import rank, table as job_table
from runner.compare.comparison import Comparison
from runner.compare.errors import CompareError
from runner.compare.figures import DEFAULT_EXPERIMENT, DEFAULT_METRIC, DEFAULT_QUALITY_METRIC, DEFAULT_QUALITY_TOLERANCE, QUALITY_FIGURES
from runner.compare.chart import plot
from runner.compare.select import select
from runner.compare.store import Store
from runner.compare.text import format_table

log = logging.getLogger(__name__)


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
    store = Store(uri)
    selection = select(store, store.experiment(experiment), sweep_id, parent_run_id, all_runs)
    parent = selection.parent
    built = job_table.build(selection.jobs, metric, params, parent.params if parent else None)
    ranked = rank.rank(built.table, metric, built.cost_usd)
    best_quality, tradeoff = rank.tradeoff(ranked.table, metric, quality_metric, quality_tolerance)
    comparison = Comparison(
        table=ranked.table, fastest=ranked.fastest, cheapest=ranked.cheapest, swept=built.swept, plot_path=None,
        metric=metric, experiment=experiment, sweep_id=selection.sweep_id, parent_run_id=parent.run_id if parent else None,
        notes=ranked.notes, errors=built.errors, quality_metric=quality_metric, quality_tolerance=quality_tolerance,
        best_quality=best_quality, tradeoff=tradeoff,
    )
    comparison.fastest_run_id = comparison.run_id(comparison.fastest)
    comparison.cheapest_run_id = comparison.run_id(comparison.cheapest)
    comparison.tradeoff_run_id = comparison.run_id(comparison.tradeoff)
    comparison.text = format_table(comparison)
    name = selection.sweep_id or comparison.parent_run_id or "all"
    comparison.plot_path = plot(comparison, Path(out_png) if out_png else default_png(uri, name))
    if parent is not None and log_to_parent:
        _attach(comparison, uri)
    return comparison


def default_png(uri: str, name: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "compare" / f"{name}.png"  # outputs/compare/
    return Path(tempfile.mkdtemp(prefix="runner-compare-")) / f"{name}.png"


def _attach(comparison: Comparison, uri: str) -> None:
    files = {"comparison.png": comparison.plot_path.read_bytes(), "comparison.txt": (comparison.text + "\n").encode()}
    try:
        tracking.attach_files(uri, comparison.parent_run_id, files)
        comparison.logged_to_parent = True
    except Exception as error:  # noqa: BLE001 - the comparison itself is done; say why the log failed
        comparison.notes.append(f"could not log to parent run {comparison.parent_run_id}: {type(error).__name__}: {error}")
        log.warning(comparison.notes[-1])
