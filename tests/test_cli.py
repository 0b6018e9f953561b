"""One rule for how every command ends, and the summary a run ends with."""

import subprocess
import sys

import pytest

from runner import compare, errors, metrics, preflight, prompt, readers, run_state, schema, storage, structured, summary, tracking
from tests.e2e_helpers import ROOT

USER_ERRORS = [
    preflight.PreflightError(["x"]), run_state.ResumeError("x"), readers.DatasetError("x"), prompt.PromptInputError("x"),
    structured.StructuredConfigError("x"), metrics.MetricsError("x"), compare.CompareError("x"), schema.UnknownKeyError("x"),
    tracking.TrackingError("x"),
]


@pytest.mark.parametrize("error", USER_ERRORS, ids=lambda e: type(e).__name__)
def test_every_user_error_is_a_runner_error_and_exits_2(error):
    assert isinstance(error, errors.RunnerError) and errors.exit_code(error) == 2


def test_anything_else_exits_1_and_ctrl_c_130():
    assert errors.exit_code(errors.RunIncomplete("x")) == 1 and errors.exit_code(RuntimeError("x")) == 1
    assert errors.exit_code(KeyboardInterrupt()) == 130


def command(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("args", [("runner.resume", "/nonexistent/run"), ("runner.track", "/nonexistent/run")], ids=lambda a: a[0])
def test_a_location_that_holds_no_run_is_one_line_and_exit_2(args):
    done = command(*args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "/nonexistent/run" in done.stderr and "Fix: the location the run printed" in done.stderr
    assert "[runner][ERROR] - " in done.stderr  # the one log format every command shares


def test_the_summary_says_rows_speed_cost_results_and_how_to_open_mlflow(tmp_path):
    config = schema.RunConfig(hw=schema.HardwareConfig(name="l4", price_per_hour=0.8, price_source="GCP on-demand"),
                              output=schema.OutputConfig(format=schema.OutputFormat.parquet))
    location = storage.resolve(str(tmp_path / "run"))
    figures = {"rows_ok": 30, "rows_failed": 2, "wall_s": 60.0, "rows_per_s": 0.5, "output_tokens_per_s": 70.0,
               "steady_output_tokens_per_s": 90.0, "cost_usd": 0.0133}
    text = summary.render(config, location, figures, outcome="run finished", mlflow_run_id=None,
                          tracking_uri=None, tracking_error="ConnectionError: refused")
    assert "30 rows ok, 2 failed" in text and str(location.child("failed")) in text
    assert "0.50 rows/s, 70.0 output tokens/s over 60.0 s (90.0 once generating)" in text
    assert "$0.0133 (hw=l4 at $0.80/h, GCP on-demand)" in text and str(location.child("results")) in text
    assert f"python -m runner.track {location}" in text
    sampled = summary.render(config, location, {"samples_ok": 4, "samples_failed": 0}, outcome="x")
    assert "4 samples ok, 0 failed" in sampled and "throughput" not in sampled
