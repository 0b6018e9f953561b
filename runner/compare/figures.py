"""The figures a comparison shows, how they are headed, and which way is better."""

from __future__ import annotations

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


def lower_is_better(metric: str) -> bool:
    """Durations (latency_p50_s, wall_s) and costs are better small; rates are better large."""
    return metric.startswith("cost") or (metric.endswith("_s") and not metric.endswith("_per_s"))
