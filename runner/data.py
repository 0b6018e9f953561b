"""The old dataset API, kept as thin wrappers over runner.readers until its callers
(app, pipeline, preflight, bench) use the readers directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional

from runner import readers
from runner.readers import ASSETS, FILE_SOURCES, INPUT_ERROR_COLUMN, SOURCES, DatasetError, file_format, synthetic_row

SYNTHETIC_COLUMNS = ["id", "prompt"]

__all__ = [
    "ASSETS", "FILE_SOURCES", "SOURCES", "SYNTHETIC_COLUMNS", "DatasetError", "count_rows", "file_format", "head_rows",
    "local_path", "peek_columns", "read", "synthetic_row",
]


def local_path(dataset: Mapping[str, Any]) -> Path:
    if dataset["source"] == "bundled":
        return ASSETS / dataset["path"]
    return Path(dataset["path"]).expanduser().resolve()


def peek_columns(dataset: Mapping[str, Any]) -> Optional[List[str]]:
    """Column names, read cheaply on the driver; None for hub datasets (the network)."""
    if dataset["source"] not in SOURCES:
        raise DatasetError(f"dataset.source={dataset['source']!r}: use one of {', '.join(SOURCES)}")
    if dataset["source"] == "hub":
        return None
    return readers.for_dataset(dataset).columns()


def count_rows(dataset: Mapping[str, Any], hub_token: Optional[str] = None) -> int:
    """Input rows within `limit`, failed rows included, counted in one streamed pass."""
    return readers.for_dataset(dataset).scan().rows


def head_rows(dataset: Mapping[str, Any], n: int) -> Optional[List[dict]]:
    """The first n readable rows (None for hub datasets: no network here)."""
    if dataset["source"] == "hub":
        return None
    return readers.for_dataset(dataset).head(n)


def read(dataset: Mapping[str, Any], hub_token: Optional[str] = None):
    """The Ray Dataset of input rows (lazy: the scan runs now, the reading when the pipeline does).

    Without INPUT_ERROR_COLUMN, which today's pipeline does not know: a row that cannot be
    read has no text and fails at the prompt like any row without its text."""
    reader = readers.for_dataset(dataset)
    return reader.ray_dataset(reader.scan()).drop_columns([INPUT_ERROR_COLUMN])
