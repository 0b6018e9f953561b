"""A side's figures from its marks and counts, and the two sides compared."""

from __future__ import annotations

from typing import Dict, Mapping

from runner.bench.results import SideFigures, SideResult, SideRun, TokenCheck

# Figures compared as pipeline / plain.
RATIO_KEYS = (
    "ready_s",
    "generation_s",
    "e2e_s",
    "req_per_s",
    "total_tokens_per_s",
    "output_tokens_per_s",
    "e2e_req_per_s",
    "e2e_output_tokens_per_s",
)


def figures(run: SideRun, spawned: float, exited: float) -> SideFigures:
    marks = run.marks
    first_in, last_out = marks["first_request_in"], marks["last_output_out"]
    generation = max(last_out - first_in, 1e-9)
    e2e = max(exited - spawned, 1e-9)
    return SideFigures(
        timeline_s={name: round(t - spawned, 3) for name, t in sorted(marks.items(), key=lambda kv: kv[1])},
        ready_s=first_in - spawned,
        generation_s=generation,
        results_s=marks["results_written"] - spawned,
        e2e_s=e2e,
        exit_after_results_s=exited - marks["results_written"],
        import_s=marks["imported"] - spawned,
        req_per_s=run.rows / generation,
        total_tokens_per_s=(run.input_tokens + run.output_tokens) / generation,
        output_tokens_per_s=run.output_tokens / generation,
        e2e_req_per_s=run.rows / e2e,
        e2e_output_tokens_per_s=run.output_tokens / e2e,
    )


def ratios(results: Mapping[str, SideResult]) -> Dict[str, float]:
    plain = results["plain"].numbers() if "plain" in results else {}
    ours = results["pipeline"].numbers() if "pipeline" in results else {}
    return {key: ours[key] / plain[key] for key in RATIO_KEYS if key in plain and key in ours and plain[key]}


def token_check(results: Mapping[str, SideResult]) -> TokenCheck:
    """Per-row input token counts, plain against pipeline, matched by id."""
    runs = {side: result.run for side, result in results.items() if result.run is not None}
    plain = runs["plain"].input_tokens_by_id if "plain" in runs else {}
    ours = runs["pipeline"].input_tokens_by_id if "pipeline" in runs else {}
    common = sorted(set(plain) & set(ours))
    diffs = [abs(ours[i] - plain[i]) for i in common]
    outputs = {side: run.output_tokens for side, run in runs.items()}
    return TokenCheck(
        rows_matched=len(common),
        max_abs_input_token_diff=max(diffs, default=None),
        output_tokens_equal=outputs.get("plain") == outputs.get("pipeline"),
    )
