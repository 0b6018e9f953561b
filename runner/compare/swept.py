"""Which settings a comparison shows as columns: the ones the sweep swept, as its parent run
stores them; without that record (--all across sweeps, runs logged without a parent), the
overridden keys that differ between jobs, then any other param that differs and is not
implied by those (a group choice such as hw=l4 changes many params)."""

from __future__ import annotations

import difflib
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pandas as pd

from runner.compare import overrides
from runner.compare.errors import CompareError

# Bookkeeping params that may differ between jobs without being a setting.
NOT_SETTINGS = ("tracking.", "hydra.")


def column_for(key: str, columns: Iterable[str]) -> Optional[str]:
    """The column that shows an override's key: the param itself, or for a group choice
    (hw=l4) its `name` param (hw.name)."""
    columns = set(columns)
    if key in columns:
        return key
    return f"{key}.name" if f"{key}.name" in columns else None


def swept(frame: pd.DataFrame, param_names: Sequence[str], job_overrides: Sequence[Dict[str, Any]], parent_params: Optional[Dict[str, str]]) -> List[str]:
    stored = [column_for(key, frame.columns) for key in overrides.swept_by_parent(parent_params or {})]
    if any(stored):
        return [column for column in dict.fromkeys(stored) if column]
    return _differing(frame, param_names, job_overrides)


def forced(keys: Sequence[str], frame: pd.DataFrame, param_names: Sequence[str], not_params: Sequence[str]) -> List[str]:
    """--param KEY ...: each must be a param of the jobs."""
    chosen = []
    for key in keys:
        key = key[len("params."):] if key.startswith("params.") else key
        if key not in frame.columns or key in not_params:
            close = difflib.get_close_matches(key, sorted(param_names), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise CompareError(f"no param {key!r} in the jobs' params{hint}; fix --param")
        chosen.append(key)
    return chosen


def _differing(frame: pd.DataFrame, param_names: Sequence[str], job_overrides: Sequence[Dict[str, Any]]) -> List[str]:
    def differs(key: str) -> bool:
        return frame[key].dropna().astype(str).nunique() > 1

    chosen: List[str] = []
    for key in dict.fromkeys(k for given in job_overrides for k in given):
        column = column_for(key, param_names) or key
        if column in frame and differs(column) and column not in chosen:
            chosen.append(column)
    others = [k for k in sorted(param_names) if k not in chosen and not k.startswith(NOT_SETTINGS) and differs(k)]
    # Names first (hw.name before hw.price_per_hour), then the fewest distinct values.
    others.sort(key=lambda k: (not k.endswith(".name"), frame[k].dropna().astype(str).nunique(), k))
    for key in others:
        if not _depends_on(frame, key, chosen):
            chosen.append(key)
    return chosen


def _depends_on(frame: pd.DataFrame, key: str, kept: List[str]) -> bool:
    """Whether `key`'s values are fixed by those of `kept` (e.g. hw.price_per_hour by hw.name)."""
    if not kept:
        return False
    keys = frame[kept].astype(str)
    return bool((frame[key].astype(str).groupby([keys[k] for k in kept]).nunique() <= 1).all())
