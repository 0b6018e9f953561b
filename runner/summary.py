"""The lines a person reads at the end of a run: rows, speed, cost, where things are."""

from __future__ import annotations

from typing import Mapping, Optional

from runner import run_state, tracking
from runner.schema import RunConfig
from runner.storage import Location


def render(config: RunConfig, location: Location, metrics: Mapping[str, float], *, outcome: str,
           mlflow_run_id: Optional[str] = None, tracking_uri: Optional[str] = None, tracking_error: Optional[str] = None,
           log_file: Optional[str] = None) -> str:
    unit = "samples" if "samples_ok" in metrics else "rows"
    ok, failed = int(metrics.get(f"{unit}_ok", 0)), int(metrics.get(f"{unit}_failed", 0))
    lines = [f"runner: {outcome}"]
    rows = f"{ok} {unit} ok, {failed} failed"
    if failed:
        rows += f" (reasons in {location.child(run_state.FAILED)})"
    lines.append(f"  rows        {rows}")
    if metrics.get("wall_s"):
        speed = f"{metrics['rows_per_s']:.2f} rows/s, {metrics['output_tokens_per_s']:.1f} output tokens/s over {metrics['wall_s']:.1f} s"
        if metrics.get("steady_output_tokens_per_s"):
            speed += f" ({metrics['steady_output_tokens_per_s']:.1f} once generating)"
        lines.append(f"  throughput  {speed}")
    if "cost_usd" in metrics:
        hw = config.hw
        lines.append(f"  cost        ${metrics['cost_usd']:.4f} (hw={hw.name} at ${hw.price_per_hour:.2f}/h, {hw.price_source})")
    lines.append(f"  results     {location.child(run_state.RESULTS)} ({config.output.format})")
    if mlflow_run_id and tracking_uri:
        opened = "" if tracking_uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {tracking_uri}, then "
        lines.append(f"  mlflow      {opened}{tracking.run_link(mlflow_run_id, tracking_uri)}")
    elif tracking_error:
        lines.append(f"  mlflow      not logged ({tracking_error}); log it with: python -m runner.track {location}")
    if log_file:
        lines.append(f"  log         {log_file} (Ray's and vLLM's output too; log.verbose=true shows that here)")
    return "\n".join(lines)
