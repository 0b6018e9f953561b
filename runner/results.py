"""Result shaping: an engine output row -> the row we write (original columns + generation).

Pure functions, so they are tested without Ray or a model.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Mapping, Optional, Sequence

ERROR_COLUMN = "error"
GENERATION_COLUMNS = (
    "generated_text",
    "num_input_tokens",
    "num_generated_tokens",
    "latency_s",
    "ttft_s",
    "finished_at",
    ERROR_COLUMN,
)


def _metric(metrics: Any, key: str) -> Optional[float]:
    if isinstance(metrics, Mapping) and metrics.get(key) is not None:
        return float(metrics[key])
    return None


def shape_result(
    row: Mapping[str, Any], original_columns: Sequence[str], now: Optional[float] = None, error: str = ""
) -> Dict[str, Any]:
    """Keep the input row's own columns and the generation's text, token counts and timing.

    `latency_s` is the engine call's duration as Ray Data measures it; `finished_at` is a
    wall-clock time, from vLLM's request arrival time where the engine reports it (it is
    exact) and from this call's clock otherwise (later by the hand-off between stages).
    """
    out = {column: row.get(column) for column in original_columns}
    latency = float(row.get("time_taken_llm") or 0.0)
    metrics = row.get("metrics")
    arrival = _metric(metrics, "arrival_time")
    finished_at = arrival + latency if arrival is not None else (now if now is not None else time.time())
    out.update(
        generated_text=row.get("generated_text") or "",
        num_input_tokens=int(row.get("num_input_tokens") or 0),
        num_generated_tokens=int(row.get("num_generated_tokens") or 0),
        latency_s=latency,
        ttft_s=_metric(metrics, "first_token_latency"),
        finished_at=finished_at,
    )
    out[ERROR_COLUMN] = error
    if error:
        # A failed row's generation is the placeholder's (or nothing): it must not read as output.
        out.update(generated_text="", num_input_tokens=0, num_generated_tokens=0)
    return out
