"""A finished comparison: the table, its winners and where its outputs went."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from runner.compare.figures import DEFAULT_EXPERIMENT, DEFAULT_METRIC, DEFAULT_QUALITY_METRIC, DEFAULT_QUALITY_TOLERANCE


@dataclass
class Comparison:
    table: pd.DataFrame  # one row per job (index: the job's label), best `metric` first
    fastest: Optional[str]  # label (the overrides string) of the fastest finished job
    cheapest: Optional[str]
    swept: List[str]  # param keys that vary, e.g. ["processor.batch_size"]
    plot_path: Optional[Path]
    text: str = ""  # the printed table and its summary
    metric: str = DEFAULT_METRIC
    experiment: str = DEFAULT_EXPERIMENT
    sweep_id: Optional[str] = None
    parent_run_id: Optional[str] = None
    fastest_run_id: Optional[str] = None
    cheapest_run_id: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    errors: Dict[str, str] = field(default_factory=dict)  # failed job label -> its runner.error tag
    logged_to_parent: bool = False
    quality_metric: str = DEFAULT_QUALITY_METRIC
    quality_tolerance: float = DEFAULT_QUALITY_TOLERANCE
    best_quality: Optional[str] = None  # None: no job was scored
    tradeoff: Optional[str] = None  # the fastest job within quality_tolerance of best_quality
    tradeoff_run_id: Optional[str] = None

    def run_id(self, label: Optional[str]) -> Optional[str]:
        return self.table.loc[label, "run_id"] if label is not None else None

    @property
    def scope(self) -> str:
        if self.sweep_id or self.parent_run_id:
            return f"sweep {self.sweep_id or '-'} (parent run {self.parent_run_id or '-'})"
        return "all finished jobs"
