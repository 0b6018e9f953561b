"""The table's order and its marks: fastest, cheapest, and where jobs were scored, the best
quality and the trade-off (the fastest job within a ROUGE tolerance of the best)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import pandas as pd

from runner.compare.errors import CompareError
from runner.compare.figures import COST_METRIC, FIGURES, ZERO_COST_NOTE, lower_is_better
from runner.compare.select import FINISHED


@dataclass
class Ranking:
    table: pd.DataFrame  # best `metric` first, failed jobs last, marks filled
    fastest: str
    cheapest: Optional[str]
    notes: List[str] = field(default_factory=list)


def rank(table: pd.DataFrame, metric: str, cost_usd: pd.Series) -> Ranking:
    """Sort by the metric (failed jobs last) and mark the fastest and the cheapest."""
    key = table[metric].where(table["status"] == FINISHED)
    table = table.loc[key.sort_values(ascending=lower_is_better(metric), na_position="last", kind="stable").index]
    finished = table["status"] == FINISHED
    candidates = table[finished & table[metric].notna()]
    if candidates.empty:
        raise CompareError(
            f"no finished job has metric {metric!r}; pass --metric one of: {', '.join(FIGURES)}"
            if finished.any() else "no finished job in this sweep (all failed or still running); pick another with --sweep or use --all"
        )
    fastest = candidates.index[0]
    cheapest, notes = _cheapest(table[finished], cost_usd)
    table.loc[fastest, "mark"] = "fastest"
    if cheapest is not None:
        table.loc[cheapest, "mark"] = "fastest, cheapest" if cheapest == fastest else "cheapest"
    return Ranking(table, fastest, cheapest, notes)


def _cheapest(done: pd.DataFrame, cost_usd: pd.Series):
    """(label of the cheapest finished job or None, notes on how it was chosen)."""
    costs = done[COST_METRIC].dropna()
    spent = cost_usd.loc[done.index].dropna()
    per_row = (done["wall_s"] / done["rows"].where(done["rows"] > 0)).dropna()
    if len(costs) and (costs != 0).any():
        lowest = costs[costs == costs.min()].index
        tied = per_row.index.intersection(lowest)
        # Ties (e.g. several jobs on a free CPU among paid GPUs): the least wall_s per row.
        return (per_row.loc[tied].idxmin() if tied.size > 1 else lowest[0]), []
    if len(costs) or (len(spent) and (spent == 0).all()):
        note = ZERO_COST_NOTE
    else:
        note = "no cost figures logged; cheapest = least wall_s per row"
    return (per_row.idxmin() if len(per_row) else None), [note]


def tradeoff(table: pd.DataFrame, metric: str, quality_metric: str, tolerance: float):
    """(best quality, trade-off) labels, marked in the table: the trade-off is the job best by
    `metric` among the finished jobs whose quality is within `tolerance` of the best; (None,
    None) if none was scored."""
    if quality_metric not in table.columns:
        return None, None
    scored = table[(table["status"] == FINISHED) & table[quality_metric].notna() & table[metric].notna()]
    if scored.empty:
        return None, None
    best = scored[quality_metric].idxmax()
    near = scored[scored[quality_metric] >= scored.loc[best, quality_metric] - tolerance - 1e-12]
    pick = near[metric].idxmin() if lower_is_better(metric) else near[metric].idxmax()
    _add_mark(table, best, "best quality")
    _add_mark(table, pick, "trade-off")
    return best, pick


def _add_mark(table: pd.DataFrame, label: str, mark: str) -> None:
    current = table.loc[label, "mark"]
    table.loc[label, "mark"] = f"{current}, {mark}" if current else mark
