"""Compare the jobs of a sweep from MLflow: which setting is fastest, which is cheapest, and,
where the jobs were scored (dataset.reference_column), which is the fastest that gives up
no more than a stated ROUGE tolerance against the best.

    python -m runner.compare                         # the newest sweep in experiment "runner"
    python -m runner.compare --sweep <sweep_id>      # one sweep; or --parent <run id>
    python -m runner.compare --all                   # every finished job in the experiment
    python -m runner.compare --uri http://mlflow.internal:5000 --experiment llama-l4
    python -m runner.compare --quality-metric rougeLsum_f_mean --quality-tolerance 0.02

Reads the MLflow contract the runner writes: a sweep is a parent run tagged
`runner.role=sweep` + `runner.sweep_id`, holding the multirun's overrides as params
(`sweep.overrides`, `sweep.<key>`); its jobs are nested runs tagged `runner.role=job`,
`runner.sweep_id`, `runner.overrides` and `runner.status`, with the flattened config as params
and the figures of runner.metrics as metrics. Prints one row per job, sorted by the chosen
throughput metric, writes a PNG (throughput and cost per 1M output tokens against the swept
setting, and throughput against quality when the jobs were scored) and logs both to the
sweep's parent run as `comparison.png` and `comparison.txt`.

Modules: store (the MLflow store, read with `mlflow.search_runs`), select (which runs),
overrides (Hydra's parser over the stored overrides), swept (which settings vary), table
(one row per job), rank (fastest, cheapest, the quality trade-off), text and chart (the
outputs), api (`compare()`), __main__ (the CLI).
"""

from runner.compare.api import compare
from runner.compare.comparison import Comparison
from runner.compare.errors import CompareError
from runner.compare.figures import (
    COST_METRIC, DEFAULT_EXPERIMENT, DEFAULT_METRIC, DEFAULT_QUALITY_METRIC, DEFAULT_QUALITY_TOLERANCE, FIGURES, QUALITY_FIGURES,
    ZERO_COST_NOTE,
)
from runner.compare.chart import plot
from runner.compare.text import format_table

__all__ = [
    "COST_METRIC", "DEFAULT_EXPERIMENT", "DEFAULT_METRIC", "DEFAULT_QUALITY_METRIC", "DEFAULT_QUALITY_TOLERANCE", "FIGURES",
    "QUALITY_FIGURES", "ZERO_COST_NOTE", "CompareError", "Comparison", "compare", "format_table", "plot",
]
