"""The pipeline side, in its own process: `runner.app.run` as `python -m runner` runs it, tracking
off. `python -m runner.bench.pipeline_side <run folder>`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Mapping

from runner import readers, result_files
from runner.bench import child
from runner.bench.config import load_side_config
from runner.bench.results import SideRun

RESULT_COLUMNS = ["num_input_tokens", "num_generated_tokens", "latency_s", "finished_at"]


def run(run_dir: Path) -> SideRun:
    marks = child.Marks()
    marks.stamp("child_start")
    side_dir = run_dir / "pipeline"
    config = load_side_config(run_dir)

    from runner import app, models, pipeline

    marks.stamp("imported")
    outcome = app.run(config, side_dir / "run", outputs_root=side_dir / "outputs")
    marks.stamp("app_returned")
    id_column = readers.id_column(config.dataset)
    table = read_results(outcome.results_dir, id_column)
    marks.update(outcome.pipeline_run.marks)
    marks.update(engine_marks(table, outcome.pipeline_run))
    ids = [str(i) for i in table.get(id_column, [])]
    return SideRun(
        side="pipeline",
        marks=dict(marks),
        engine_kwargs=pipeline.engine_kwargs(config, models.locate(config.model)),
        rows=len(table["num_input_tokens"]),
        input_tokens=int(sum(table["num_input_tokens"])),
        output_tokens=int(sum(table["num_generated_tokens"])),
        input_tokens_by_id=dict(zip(ids, (int(n) for n in table["num_input_tokens"]))),
        metrics=outcome.metrics,
        results_dir=str(outcome.results_dir),
    )


def engine_marks(table: Mapping[str, list], pipeline_run) -> Dict[str, float]:
    """When the first request reached the engine and the last output left it, from the rows'
    own engine-clock times, and when the results were all written, as the pipeline reports it.
    Not from file mtimes: accounting rewrites a results file that held failed rows after the
    pipeline ended, which moved "last output" by as much as the settling took."""
    starts = [finished - latency for finished, latency in zip(table["finished_at"], table["latency_s"])]
    return {
        "ray_start": pipeline_run.started_at,
        "first_request_in": min(starts),
        "last_output_out": max(table["finished_at"]),
        "results_written": pipeline_run.finished_at,
    }


def read_results(results, id_column: str) -> Dict[str, list]:
    dataset = result_files.open_dataset(results)
    wanted = [id_column, *RESULT_COLUMNS]
    return dataset.to_table(columns=[c for c in wanted if c in dataset.schema.names]).to_pydict()


if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    sys.exit(child.main(run))
