"""Throughput, latency and cost figures, computed from the written results files.

The files are scanned a few columns at a time, so a run of millions of rows is measured
without loading its text. Start-up and steady state are told apart by per-row timestamps:
the first request reaching the engine marks the end of start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict

import numpy as np

from runner import quality, result_files
from runner.errors import RunnerError

if TYPE_CHECKING:
    from runner.schema import HardwareConfig

TIMING_COLUMNS = ["num_input_tokens", "num_generated_tokens", "latency_s", "ttft_s", "finished_at"]


class MetricsError(RunnerError, ValueError):
    """Results that cannot be measured; the message names the folder, the columns and the fix."""


def _scan(results, started_at: float, finished_at: float):
    """The timing columns of the rows this pipeline attempt wrote. A resumed run's earlier
    rows came from other attempts, whose wall time is not this one's."""
    import pyarrow.dataset as pds

    dataset = result_files.open_dataset(results)
    present = dataset.schema.names
    if not present:  # no results file: every row failed, or none ran
        return []
    missing = [c for c in TIMING_COLUMNS if c not in present]
    if missing:
        raise MetricsError(
            f"the results in {results} lack column(s) {', '.join(missing)}, which the runner writes for every row "
            f"(runner/results.py), so their figures cannot be computed; the files hold: {', '.join(present)}. "
            "Fix: restore the files as the runner wrote them (an edit or another tool removed the columns), "
            "or start a new run"
        )
    columns = TIMING_COLUMNS
    # A second of slack: the engine's clock and the driver's may differ slightly on a cluster.
    window = (pds.field("finished_at") >= started_at - 1.0) & (pds.field("finished_at") <= finished_at + 1.0)
    return dataset.to_batches(columns=columns, filter=window)


def quality_figures(results) -> Dict[str, float]:
    """ROUGE means over every scored row, whichever attempt of a resumed run wrote it."""
    dataset = result_files.open_dataset(results)
    columns = [c for c in quality.SCORE_COLUMNS.values() if c in dataset.schema.names]
    scores = quality.Means()
    if columns:
        for batch in dataset.to_batches(columns=columns):
            scores.add(batch.to_pydict())
    return scores.figures()


def _percentiles(values: np.ndarray, prefix: str) -> Dict[str, float]:
    values = values[~np.isnan(values)]
    if not values.size:
        return {}
    return {
        f"{prefix}_mean_s": float(values.mean()),
        f"{prefix}_p50_s": float(np.percentile(values, 50)),
        f"{prefix}_p95_s": float(np.percentile(values, 95)),
    }


def compute(results, started_at: float, finished_at: float, hw: HardwareConfig, replicas: int) -> Dict[str, float]:
    """Figures of one pipeline attempt (started_at..finished_at) from the results Location."""
    rows = input_tokens = output_tokens = 0
    latencies, ttfts, finishes = [], [], []
    first_start, last_finish = float("inf"), float("-inf")
    for batch in _scan(results, started_at, finished_at):
        table = batch.to_pydict()
        n = batch.num_rows
        if not n:
            continue
        rows += n
        input_tokens += sum(table["num_input_tokens"])
        output_tokens += sum(table["num_generated_tokens"])
        latency = np.asarray(table["latency_s"], dtype=float)
        finish = np.asarray(table["finished_at"], dtype=float)
        first_start = min(first_start, float(np.min(finish - latency)))
        last_finish = max(last_finish, float(np.max(finish)))
        latencies.append(latency)
        finishes.append(finish)
        ttfts.append(np.asarray([np.nan if v is None else v for v in table["ttft_s"]], dtype=float))

    wall = max(finished_at - started_at, 1e-9)
    figures: Dict[str, float] = {
        "rows": rows,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "wall_s": wall,
        "rows_per_s": rows / wall,
        "input_tokens_per_s": input_tokens / wall,
        "output_tokens_per_s": output_tokens / wall,
        "total_tokens_per_s": (input_tokens + output_tokens) / wall,
    }
    if rows:
        # Clamp: the engine's clock and the driver's may differ slightly on a cluster.
        startup = min(max(first_start - started_at, 0.0), wall)
        generation = max(last_finish - first_start, 1e-9)
        figures.update(
            startup_s=startup,
            generation_s=generation,
            steady_rows_per_s=rows / generation,
            steady_input_tokens_per_s=input_tokens / generation,
            steady_output_tokens_per_s=output_tokens / generation,
            steady_total_tokens_per_s=(input_tokens + output_tokens) / generation,
        )
        every_latency, every_finish = np.concatenate(latencies), np.concatenate(finishes)
        figures["engine_requests_peak"] = most_at_once(every_finish - every_latency, every_finish)
        figures.update(_percentiles(every_latency, "latency"))
        figures.update(_percentiles(np.concatenate(ttfts), "ttft"))
    figures.update(cost(hw, replicas, wall, rows, output_tokens))
    figures.update(quality_figures(results))
    return figures


def most_at_once(starts: np.ndarray, ends: np.ndarray) -> int:
    """The most requests inside the engine at one moment, queued or generating. Under
    engine.max_num_seqs (per replica) through a long job, the engine was not kept full. A
    request that ends as another starts does not overlap it."""
    times = np.concatenate([starts, ends])
    steps = np.concatenate([np.ones(len(starts)), -np.ones(len(ends))])
    order = np.lexsort((steps, times))  # by time, an end before a start
    return int(np.max(np.cumsum(steps[order]))) if len(times) else 0


def cost(hw: HardwareConfig, replicas: int, wall_s: float, rows: int, output_tokens: int) -> Dict[str, float]:
    """Cost of the run's wall time on `replicas` copies of the hw option's hardware."""
    usd = hw.price_per_hour * replicas * wall_s / 3600.0
    figures = {"cost_usd": usd}
    if output_tokens:
        figures["cost_per_1m_output_tokens_usd"] = usd / output_tokens * 1e6
    if rows:
        figures["cost_per_1k_rows_usd"] = usd / rows * 1e3
    return figures
