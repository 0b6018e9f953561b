"""The plain side, in its own process: `LLM(model, **engine_kwargs)` and one `LLM.generate`
call on the requests the parent wrote. `python -m runner.bench.plain_side <run folder>`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict

from runner.bench import child
from runner.bench.config import load_side_config
from runner.bench.results import SideRun


def run(run_dir: Path) -> SideRun:
    marks = child.Marks()
    marks.stamp("child_start")
    config = load_side_config(run_dir)
    requests = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines() if line.strip()]

    from vllm import LLM, SamplingParams

    from runner import models, pipeline

    marks.stamp("imported")
    location = models.locate(config.model)
    kwargs = pipeline.engine_kwargs(config, location)
    # Ray Data LLM's engine keeps vLLM's stats on (AsyncEngineArgs' default); LLM turns them
    # off by default. Same setting on both sides.
    kwargs.setdefault("disable_log_stats", False)
    llm = LLM(model=location.source, **kwargs)
    marks.stamp("engine_ready")
    params = [SamplingParams(**r["sampling_params"]) for r in requests]
    marks.stamp("first_request_in")
    outputs = llm.generate([r["prompt"] for r in requests], params, use_tqdm=False)
    marks.stamp("last_output_out")
    rows = [_row(request, output) for request, output in zip(requests, outputs)]
    with open(run_dir / "plain" / "results.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    marks.stamp("results_written")
    return SideRun(
        side="plain",
        marks=dict(marks),
        engine_kwargs=kwargs,
        resolved=_scheduler_settings(llm),
        rows=len(rows),
        input_tokens=sum(r["num_input_tokens"] for r in rows),
        output_tokens=sum(r["num_generated_tokens"] for r in rows),
        input_tokens_by_id={r["id"]: r["num_input_tokens"] for r in rows},
    )


def _row(request: Dict[str, Any], output) -> Dict[str, Any]:
    completion = output.outputs[0]
    return {
        "id": request["id"],
        "generated_text": completion.text,
        "num_input_tokens": len(output.prompt_token_ids or []),
        "num_generated_tokens": len(completion.token_ids),
    }


def _scheduler_settings(llm) -> Dict[str, Any]:
    """What vLLM made of the scheduler settings (those left unset are its choice)."""
    try:
        scheduler = llm.llm_engine.vllm_config.scheduler_config
    except AttributeError:  # not every vLLM version exposes it there
        return {}
    return {"max_num_seqs": scheduler.max_num_seqs, "max_num_batched_tokens": scheduler.max_num_batched_tokens}


if __name__ == "__main__":  # vLLM spawns processes that re-import the main module
    sys.exit(child.main(run))
