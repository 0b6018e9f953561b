"""Several benchmark settings in a row, compared with the first (the reference).

    python -m runner.bench_sweep --sides pipeline --out outputs/bench/sweep \\
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
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from runner import bench

log = logging.getLogger("runner.bench_sweep")

COLUMNS = [
    ("output tok/s", "output_tokens_per_s", "{:,.0f}"),
    ("total tok/s", "total_tokens_per_s", "{:,.0f}"),
    ("req/s", "req_per_s", "{:.2f}"),
    ("generation s", "generation_s", "{:.1f}"),
    ("ready s", "ready_s", "{:.1f}"),
    ("end-to-end s", "e2e_s", "{:.1f}"),
]


def parse_case(text: str) -> Tuple[str, List[str]]:
    name, _, overrides = text.partition(":")
    if not name.strip() or not _:
        raise argparse.ArgumentTypeError(f"--case {text!r}: write it as 'name: key=value key=value'")
    return name.strip(), shlex.split(overrides)


def table(sweep: Dict[str, Any]) -> str:
    side = sweep["side"]
    head = ["case", "overrides"] + [c[0] for c in COLUMNS] + ["output tok/s vs first"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in sweep["cases"]:
        result = case["summary"]["results"].get(side, {}) if case.get("summary") else {}
        cells = [case["name"], " ".join(case["overrides"])]
        for _, key, fmt in COLUMNS:
            value = result.get(key)
            cells.append(fmt.format(value) if isinstance(value, (int, float)) else result.get("error", case.get("error", "-")))
        cells.append(f"{case['vs_first']:.2f}x" if case.get("vs_first") else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_sweep(
    base: Sequence[str],
    cases: Sequence[Tuple[str, List[str]]],
    side: str,
    out: Path,
    json_path: Optional[Path],
    cache: str,
    timeout_s: float,
) -> Dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    sweep: Dict[str, Any] = {"base": list(base), "side": side, "cache": cache, "cases": []}
    first = None
    for name, overrides in cases:
        entry: Dict[str, Any] = {"name": name, "overrides": overrides}
        sweep["cases"].append(entry)
        try:
            summary = bench.run_bench(
                list(base) + overrides, [side], out / name, None, cache, timeout_s, prewarm=first is None
            )
            entry["summary"] = summary
            figure = summary["results"][side].get("output_tokens_per_s")
            if first is None and figure:
                first = figure
            if figure and first:
                entry["vs_first"] = figure / first
        except Exception as error:  # noqa: BLE001 - one bad case must not lose the others
            entry["error"] = f"{type(error).__name__}: {error}"
            log.exception("case %s failed", name)
        sweep["table"] = table(sweep)
        text = json.dumps(sweep, indent=2, default=str)
        (out / "sweep.json").write_text(text)
        if json_path:
            Path(json_path).write_text(text)
        print(sweep["table"], flush=True)
    return sweep


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.bench_sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", nargs="*", help="overrides every case shares")
    parser.add_argument("--case", action="append", type=parse_case, required=True, help="'name: overrides...'; the first is the reference")
    parser.add_argument("--sides", default="pipeline", choices=bench.SIDES, help="which side each case runs (default pipeline)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cache", default="cold")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each case may take")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sweep = run_sweep(args.base, args.case, args.sides, args.out.resolve(), args.json, args.cache, args.timeout)
    return 0 if all("error" not in c and "error" not in c.get("summary", {}).get("results", {}).get(args.sides, {}) for c in sweep["cases"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
