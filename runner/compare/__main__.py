"""`python -m runner.compare [options]`: the CLI of runner.compare."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from runner.compare.api import compare
from runner import cli
from runner.compare.figures import DEFAULT_EXPERIMENT, DEFAULT_METRIC, DEFAULT_QUALITY_METRIC, DEFAULT_QUALITY_TOLERANCE, QUALITY_FIGURES


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--uri", default=None, help="MLflow tracking URI (default: the runner's store, sqlite:///<cwd>/outputs/mlflow.db)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (tracking.experiment; default: runner)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", metavar="SWEEP_ID", help="the sweep's runner.sweep_id (default: the newest sweep)")
    which.add_argument("--parent", metavar="RUN_ID", help="the sweep's parent run id")
    which.add_argument("--all", action="store_true", help="every finished job of the experiment")
    parser.add_argument("--param", nargs="+", action="extend", metavar="KEY", help="swept param keys to show (default: those the sweep swept)")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help=f"what fastest means: highest rate wins, lowest duration (*_s, not *_per_s) wins (default: {DEFAULT_METRIC})")
    parser.add_argument("--quality-metric", default=DEFAULT_QUALITY_METRIC, choices=QUALITY_FIGURES,
                        help=f"the quality figure of the trade-off (default: {DEFAULT_QUALITY_METRIC})")
    parser.add_argument("--quality-tolerance", type=float, default=DEFAULT_QUALITY_TOLERANCE, metavar="ROUGE",
                        help="trade-off: the fastest job whose quality is at most this far under the best "
                        f"(a ROUGE F difference, 0-1; default {DEFAULT_QUALITY_TOLERANCE})")
    parser.add_argument("--out", type=Path, metavar="PATH.png", help="where to write the plot (default: outputs/compare/<sweep>.png beside a SQLite store)")
    parser.add_argument("--no-log", action="store_true", help="do not log comparison.png/.txt to the parent run")


def main(argv: Optional[List[str]] = None) -> int:
    from runner.schema import PathsConfig
    from runner.tracking import default_uri

    parser = argparse.ArgumentParser(
        prog="python -m runner.compare",
        description="Compare the jobs of a sweep from MLflow: fastest and cheapest setting, and the best quality/throughput trade-off.",
    )
    add_cli_args(parser)
    args = parser.parse_args(argv)
    return cli.run(lambda: _compare(args, args.uri or default_uri(Path(PathsConfig.outputs))), level=logging.WARNING)


def _compare(args: argparse.Namespace, uri: str) -> int:
    result = compare(
        uri, args.experiment, sweep_id=args.sweep, parent_run_id=args.parent, params=args.param,
        metric=args.metric, out_png=args.out, log_to_parent=not args.no_log, all_runs=args.all,
        quality_metric=args.quality_metric, quality_tolerance=args.quality_tolerance,
    )
    print(result.text)
    print(f"plot: {result.plot_path}")
    if result.logged_to_parent:
        print(f"logged comparison.png and comparison.txt to parent run {result.parent_run_id}")
    for note in result.notes:
        if note.startswith("could not log"):
            print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
