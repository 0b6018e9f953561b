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

    Where vLLM reports request metrics, `latency_s` is the request's time inside the engine
    (queued to last token) and `finished_at` its wall-clock end (arrival + that time).
    Otherwise `latency_s` is the engine call as Ray Data times it (which also counts the
    wait for a free slot) and `finished_at` this call's clock (later by the hand-off
    between stages).
    """
    out = {column: row.get(column) for column in original_columns}
    metrics = row.get("metrics")
    arrival, queued, last_token = (_metric(metrics, k) for k in ("arrival_time", "queued_ts", "last_token_ts"))
    if arrival is not None and queued is not None and last_token is not None:
        latency = max(last_token - queued, 0.0)
        finished_at = arrival + latency
    else:
        latency = float(row.get("time_taken_llm") or 0.0)
        finished_at = now if now is not None else time.time()
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
