"""The comparison as printed (and attached to the parent run as comparison.txt): a header
line, the table, the winners, notes and failures, and what the figures mean."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List

import pandas as pd

from runner.compare.comparison import Comparison
from runner.compare.figures import COST_METRIC, FIGURES, HEADERS, LEGEND, QUALITY_FIGURES, QUALITY_LEGEND, lower_is_better


def fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** -digits * 10:
            return f"{value:.3g}"
        return f"{value:,.{digits}f}"
    return str(value)


def cost(value: Any) -> str:
    return "0" if value == 0 else fmt(value, 4)


def _plain(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _formatter(column: str, metric: str) -> Callable[[Any], str]:
    if column == "rows":
        return lambda v: "-" if pd.isna(v) else f"{int(v):,}"
    if column.startswith("cost"):
        return cost
    if column in QUALITY_FIGURES:
        return lambda v: fmt(v, 3)
    if column in FIGURES or column == metric:
        return lambda v: fmt(v, 1)
    return _plain


def body(comparison: Comparison) -> str:
    shown = comparison.table.drop(columns=["run_id"], errors="ignore").copy()
    if not comparison.swept:
        shown.insert(0, "job", shown.index)
    formatters: Dict[str, Callable[[Any], str]] = {HEADERS.get(c, c): _formatter(c, comparison.metric) for c in shown.columns}
    return shown.rename(columns=HEADERS).to_string(index=False, formatters=formatters, justify="right", na_rep="-")


def format_table(comparison: Comparison) -> str:
    table, metric = comparison.table, comparison.metric
    n_failed = int((table["status"] == "failed").sum())
    order = " (lowest first)" if lower_is_better(metric) else " (highest first)"
    head = (
        f"{comparison.scope}, experiment {comparison.experiment!r}: {len(table)} jobs"
        + (f", {n_failed} failed" if n_failed else "")
        + f"; swept: {', '.join(comparison.swept) or 'nothing varies'}; sorted by {metric}{order}"
    )
    lines = [head, body(comparison), "", *_winners(comparison), *comparison.notes]
    for label in table.index[table["status"] == "failed"]:
        error = comparison.errors.get(label, "")
        lines.append(f"failed:   {label}" + (f": {error.splitlines()[0][:160]}" if error else ""))
    lines.append(LEGEND)
    if comparison.best_quality is not None:
        lines.append(QUALITY_LEGEND)
    return "\n".join(lines)


def _winners(comparison: Comparison) -> List[str]:
    table, metric = comparison.table, comparison.metric
    lines = []
    if comparison.fastest is not None:
        lines.append(f"fastest:  {comparison.fastest}  ({metric} {fmt(table.loc[comparison.fastest, metric], 1)})")
    if comparison.cheapest is not None:
        row = table.loc[comparison.cheapest]
        lines.append(
            f"cheapest: {comparison.cheapest}  (${cost(row[COST_METRIC])} per 1M output tokens, "
            f"{fmt(row['wall_s'] / row['rows'] if row['rows'] else float('nan'), 3)} wall_s per row)"
        )
    if comparison.best_quality is not None:
        q, best, row = comparison.quality_metric, table.loc[comparison.best_quality], table.loc[comparison.tradeoff]
        gap = best[q] - row[q]
        lines.append(f"best quality: {comparison.best_quality}  ({q} {fmt(best[q], 3)})")
        lines.append(
            f"trade-off: {comparison.tradeoff}  (best {metric} within {comparison.quality_tolerance:g} {q} of the best: "
            f"{fmt(row[metric], 1)} {metric}, {q} {fmt(row[q], 3)}"
            + (f", {gap:.3f} under the best)" if gap > 0 else ", the best)")
        )
    return lines
