"""What both side processes share: named moments printed as they happen, the log format, and
the result written where the parent reads it (<run folder>/<side>/result.json)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from runner import cli
from runner.bench.results import SideRun


class Marks(dict):
    """Named moments (epoch seconds) of a side's process, printed as they happen so the log
    shows them beside vLLM's own lines."""

    def stamp(self, name: str) -> None:
        self[name] = time.time()
        print(f"[bench] {name} {self[name]:.3f}", flush=True)


def main(run: Callable[[Path], SideRun]) -> int:
    """`python -m runner.bench.<side>_side <run folder>`: run the side, save what it measured."""
    cli.setup_logging()
    run_dir = Path(sys.argv[1])
    result = run(run_dir)
    result.save(run_dir / result.side / "result.json")
    return 0
