"""The bench's tables, as printed and kept in bench.json / sweep.json (Markdown)."""

from __future__ import annotations

from typing import Iterable, Sequence

from runner.bench.results import SIDES, BenchResult, SideResult, SweepCase

# (label, figure, format)
SIDE_ROWS = [
    ("seconds to engine ready (spawn -> first request)", "ready_s", "{:.1f}"),
    ("generation seconds", "generation_s", "{:.1f}"),
    ("end-to-end seconds (spawn -> exit)", "e2e_s", "{:.1f}"),
    ("req/s (generation)", "req_per_s", "{:.2f}"),
    ("total tokens/s (generation)", "total_tokens_per_s", "{:,.0f}"),
    ("output tokens/s (generation)", "output_tokens_per_s", "{:,.0f}"),
    ("req/s (end to end)", "e2e_req_per_s", "{:.2f}"),
    ("output tokens/s (end to end)", "e2e_output_tokens_per_s", "{:,.1f}"),
    ("rows", "rows", "{:d}"),
    ("input tokens", "input_tokens", "{:,d}"),
    ("output tokens", "output_tokens", "{:,d}"),
]
SWEEP_COLUMNS = [
    ("output tok/s", "output_tokens_per_s", "{:,.0f}"),
    ("total tok/s", "total_tokens_per_s", "{:,.0f}"),
    ("req/s", "req_per_s", "{:.2f}"),
    ("generation s", "generation_s", "{:.1f}"),
    ("ready s", "ready_s", "{:.1f}"),
    ("end-to-end s", "e2e_s", "{:.1f}"),
]


def markdown(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def cell(result: SideResult, key: str, fmt: str, missing: str = "-") -> str:
    value = result.numbers().get(key)
    if isinstance(value, (int, float)):
        return fmt.format(value)
    return result.error or missing


def side_by_side(bench: BenchResult) -> str:
    """One row per figure, a column per side, and pipeline / plain where both ran."""
    sides = [s for s in SIDES if s in bench.results]
    both = len(sides) == 2
    head = ["figure", *sides] + (["pipeline / plain"] if both else [])
    rows = []
    for label, key, fmt in SIDE_ROWS:
        cells = [label] + [cell(bench.results[side], key, fmt) for side in sides]
        if both:
            cells.append(f"{bench.ratios[key]:.3f}" if key in bench.ratios else "")
        rows.append(cells)
    return markdown(head, rows)


def sweep_table(side: str, cases: Sequence[SweepCase]) -> str:
    """One row per case, its side's figures and its output tokens/s over the first case's."""
    head = ["case", "overrides"] + [c[0] for c in SWEEP_COLUMNS] + ["output tok/s vs first"]
    rows = []
    for case in cases:
        result = case.result.results.get(side) if case.result is not None else None
        cells = [case.name, " ".join(case.overrides)]
        for _, key, fmt in SWEEP_COLUMNS:
            cells.append(cell(result, key, fmt) if result is not None else (case.error or "-"))
        cells.append(f"{case.vs_first:.2f}x" if case.vs_first else "")
        rows.append(cells)
    return markdown(head, rows)
