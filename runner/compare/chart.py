"""The comparison as a PNG: throughput (the metric and the steady state) and cost per 1M
output tokens against the swept setting; where jobs were scored, a third panel: throughput
against quality, a point a job."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List

import pandas as pd

from runner.compare.comparison import Comparison
from runner.compare.figures import COST_METRIC, STEADY_METRIC, ZERO_COST_NOTE


def _numeric(values: List[Any]) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def plot(comparison: Comparison, out_png: Path) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global backend; savefig renders with Agg

    table, swept = comparison.table, comparison.swept
    done = table[(table["status"] == "finished") & table[comparison.metric].notna()]
    numeric = len(swept) == 1 and _numeric(list(done[swept[0]]))
    if numeric:
        done = done[done[swept[0]].notna()].sort_values(swept[0], kind="stable")
    scored = comparison.best_quality is not None
    fig = Figure(figsize=(16.5 if scored else 11, 4.6), layout="constrained")
    throughput, cost, *rest = fig.subplots(1, 3 if scored else 2)
    if scored:
        _quality_panel(rest[0], comparison)
    x = done[swept[0]].astype(float).to_numpy() if numeric else list(range(len(done)))
    _throughput_and_cost(throughput, cost, comparison, done, x, numeric)
    for ax in (throughput, cost):
        _x_axis(ax, comparison, done, x, numeric)
    scope = f"sweep {comparison.sweep_id}" if comparison.sweep_id else ("parent run " + comparison.parent_run_id if comparison.parent_run_id else "all finished jobs")
    fig.suptitle(f"{comparison.experiment}: {scope}")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return out_png


def _throughput_and_cost(throughput, cost, comparison: Comparison, done: pd.DataFrame, x, numeric: bool) -> None:
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


def _x_axis(ax, comparison: Comparison, done: pd.DataFrame, x, numeric: bool) -> None:
    swept = comparison.swept
    ax.set_xlabel(swept[0] if len(swept) == 1 else ("overrides" if swept else "job"))
    ax.grid(alpha=0.3)
    if numeric:
        values = sorted(set(x))
        if min(values) > 0 and max(values) / min(values) >= 8:
            ax.set_xscale("log", base=2)  # batch sizes and sequence counts are powers of two
        ax.set_xticks(values)
        ax.set_xticklabels([f"{v:g}" for v in values])
        ax.minorticks_off()
    else:
        ticks = [str(v) for v in done[swept[0]]] if len(swept) == 1 else list(done.index)
        ax.set_xticks(x)
        ax.set_xticklabels(ticks, rotation=20 if len(swept) > 1 or len(done) > 4 else 0, ha="right" if len(swept) > 1 else "center", fontsize="small")
    ax.set_ylim(bottom=0)


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
