"""`python -m runner.bench [options] [overrides]`: plain vLLM and the pipeline, side by side."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import runner.bench
from runner import cli
from runner.bench.results import SIDES
from runner.errors import ConfigError

log = logging.getLogger("runner.bench")


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="config overrides, as for python -m runner")
    parser.add_argument("--sides", default=",".join(SIDES), help="plain,pipeline (default) or one of them")
    parser.add_argument("--out", type=Path, help="run folder (default outputs/bench/<time>)")
    parser.add_argument("--json", type=Path, help="also write the result JSON here")
    parser.add_argument("--cache", default="cold", help="'cold' (each side starts with empty compile caches) or an earlier bench's run folder: each side starts from a copy of the caches its side left there")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each side may take")
    parser.add_argument("--no-prewarm", action="store_true", help="skip the untimed import of vLLM/torch before the sides")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.bench", description=runner.bench.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_args(parser)
    args = parser.parse_args(argv)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if not sides or not set(sides) <= set(SIDES):
        parser.error(f"--sides: use plain, pipeline or plain,pipeline (got {args.sides!r})")

    return cli.run(lambda: _bench(args, sides))


def _bench(args: argparse.Namespace, sides: List[str]) -> int:
    from hydra.errors import ConfigCompositionException

    from runner.bench.run import run_bench

    try:
        bench = run_bench(args.overrides, sides, args.out, args.json, args.cache, args.timeout, not args.no_prewarm)
    except ConfigCompositionException as error:
        # As `python -m runner` reports it: Hydra's message, and the reason under it (the key and the schema).
        cause = f": {error.__cause__}" if error.__cause__ else ""
        raise ConfigError(f"the config cannot be composed: {error}{cause}") from None
    print(bench.table)
    print(json.dumps({"ratios": bench.ratios, "tokens": dataclasses.asdict(bench.tokens), "run_dir": bench.run_dir}, indent=2))
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
