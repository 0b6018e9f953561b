"""The bench's records: what a side's process reports, what the parent makes of it, and the
whole run's result. bench.json is their `to_dict()`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

SIDES = ("plain", "pipeline")


@dataclass
class SideRun:
    """What a side's process writes to <run folder>/<side>/result.json."""

    side: str
    marks: Dict[str, float]
    engine_kwargs: Dict[str, Any]
    rows: int
    input_tokens: int
    output_tokens: int
    input_tokens_by_id: Dict[str, int]
    resolved: Dict[str, Any] = field(default_factory=dict)  # plain: the scheduler settings vLLM chose
    metrics: Dict[str, Any] = field(default_factory=dict)  # pipeline: the run's own figures
    results_dir: str = ""  # pipeline: where its results are

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> "SideRun":
        return cls(**json.loads(path.read_text()))


@dataclass
class SideFigures:
    """A side's figures, seconds after its process was spawned; rates over generation_s are the steady state."""

    ready_s: float
    generation_s: float
    results_s: float
    e2e_s: float
    exit_after_results_s: float
    import_s: float
    req_per_s: float
    total_tokens_per_s: float
    output_tokens_per_s: float
    e2e_req_per_s: float
    e2e_output_tokens_per_s: float
    timeline_s: Dict[str, float] = field(default_factory=dict)  # every mark, in order

    def numbers(self) -> Dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "timeline_s"}


@dataclass
class SideResult:
    """One side as the parent saw it: its run and figures, or why it has none."""

    side: str
    run: Optional[SideRun] = None
    figures: Optional[SideFigures] = None
    log_figures: Dict[str, float] = field(default_factory=dict)  # vLLM's start-up, from its log
    error: Optional[str] = None
    log_tail: str = ""

    def numbers(self) -> Dict[str, float]:
        """The side's figures and counts by name (MLflow metrics, tables)."""
        if self.run is None or self.figures is None:
            return {}
        counts = {"rows": self.run.rows, "input_tokens": self.run.input_tokens, "output_tokens": self.run.output_tokens}
        return {**counts, **self.figures.numbers()}

    def to_dict(self) -> Dict[str, Any]:
        if self.error is not None:
            return {"side": self.side, "error": self.error, "log_tail": self.log_tail}
        return {**asdict(self.run), **asdict(self.figures), "log_figures": self.log_figures}


@dataclass
class TokenCheck:
    """Whether both sides' engines saw the same prompts: input token counts matched by id."""

    rows_matched: int
    max_abs_input_token_diff: Optional[int]
    output_tokens_equal: bool


@dataclass
class BenchResult:
    command: str
    started_at: float
    overrides: List[str]
    device: str
    cache: str
    model: str
    hw: str
    prep: Dict[str, float]  # seconds spent before the sides: model location, requests, prewarm, GPU waits
    results: Dict[str, SideResult]
    ratios: Dict[str, float]
    tokens: TokenCheck
    run_dir: str
    table: str = ""
    mlflow_run_id: Optional[str] = None

    @property
    def failed(self) -> bool:
        return any(result.error is not None for result in self.results.values())

    def to_dict(self) -> Dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["results"] = {side: result.to_dict() for side, result in self.results.items()}
        out["tokens"] = asdict(self.tokens)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


@dataclass
class SweepCase:
    """One setting of runner.bench.sweep: the base overrides plus its own."""

    name: str
    overrides: List[str]
    result: Optional[BenchResult] = None
    error: Optional[str] = None  # why the case has no result
    vs_first: Optional[float] = None  # its output tokens/s over the first case's

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"name": self.name, "overrides": self.overrides}
        if self.result is not None:
            out["summary"] = self.result.to_dict()
        if self.error is not None:
            out["error"] = self.error
        if self.vs_first is not None:
            out["vs_first"] = self.vs_first
        return out
