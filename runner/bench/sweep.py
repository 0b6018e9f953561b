"""Several benchmark settings in a row, compared with the first (the reference).

    python -m runner.bench.sweep --sides pipeline --out outputs/bench/sweep \\
        --case "ref: processor.batch_size=16 engine.max_num_batched_tokens=2048" \\
        --case "b256: processor.batch_size=256 engine.max_num_batched_tokens=16384" \\
        -- +experiment=bench_h100

Each case is one `runner.bench` run (fresh processes, cold compile caches unless --cache) of
the base overrides plus the case's own. The sweep's JSON (rewritten after every case, so an
interrupted sweep keeps what finished) holds each case's figures and its output tokens/s
over the reference's.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from runner import cli
from runner.bench import report
from runner.bench.results import SIDES, SweepCase
from runner.bench.run import run_bench

log = logging.getLogger(__name__)


def parse_case(text: str) -> Tuple[str, List[str]]:
    name, colon, overrides = text.partition(":")
    if not name.strip() or not colon:
        raise argparse.ArgumentTypeError(f"--case {text!r}: write it as 'name: key=value key=value'")
    return name.strip(), shlex.split(overrides)


def run_sweep(
    base: Sequence[str], cases: Sequence[Tuple[str, List[str]]], side: str, out: Path, json_path: Optional[Path], cache: str, timeout_s: float,
) -> List[SweepCase]:
    out.mkdir(parents=True, exist_ok=True)
    done: List[SweepCase] = []
    for name, overrides in cases:
        case = SweepCase(name=name, overrides=overrides)
        done.append(case)
        try:
            case.result = run_bench([*base, *overrides], [side], out / name, None, cache, timeout_s, prewarm=len(done) == 1)
        except Exception as error:  # noqa: BLE001 - one bad case must not lose the others
            case.error = f"{type(error).__name__}: {error}"
            log.exception("case %s failed", name)
        _compare_with_first(done, side)
        table = report.sweep_table(side, done)
        _save({"base": list(base), "side": side, "cache": cache, "cases": [c.to_dict() for c in done], "table": table}, out, json_path)
        print(table, flush=True)
    return done


def _compare_with_first(cases: List[SweepCase], side: str) -> None:
    """The newest case's output tokens/s over the first case that has a figure."""
    figures = [c.result.results[side].numbers().get("output_tokens_per_s") if c.result else None for c in cases]
    reference = next((f for f in figures if f), None)
    if figures[-1] and reference:
        cases[-1].vs_first = figures[-1] / reference


def _save(sweep: Dict[str, Any], out: Path, json_path: Optional[Path]) -> None:
    text = json.dumps(sweep, indent=2, default=str)
    (out / "sweep.json").write_text(text)
    if json_path:
        Path(json_path).write_text(text)


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", nargs="*", help="overrides every case shares")
    parser.add_argument("--case", action="append", type=parse_case, required=True, help="'name: overrides...'; the first is the reference")
    parser.add_argument("--sides", default="pipeline", choices=SIDES, help="which side each case runs (default pipeline)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cache", default="cold")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each case may take")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.bench.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_args(parser)
    args = parser.parse_args(argv)

    def sweep() -> int:
        cases = run_sweep(args.base, args.case, args.sides, args.out.resolve(), args.json, args.cache, args.timeout)
        return 0 if all(c.result is not None and not c.result.failed for c in cases) else 1

    return cli.run(sweep)


if __name__ == "__main__":
    sys.exit(main())
