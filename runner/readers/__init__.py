"""Where rows come from: one reader per source (jsonl, parquet, csv, hub, synthetic).

    reader = readers.for_dataset(cfg.dataset, text_columns=prompt.column_map(cfg.prompt).values())
    reader.columns(); reader.column_types(); reader.head(n)      # cheap, on the driver
    scan = reader.scan()                                        # one streamed pass: count, ids, bad rows
    ds = reader.ray_dataset(scan, done_ids)                     # the rows still to run

Every row the Ray Dataset yields carries its id as text in `scan.id_column` and a text
column INPUT_ERROR_COLUMN: "" for a good row, else why it is a failed row (file and line
included). `reader.fingerprint()` identifies the input for a resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from runner import storage
from runner.readers.base import (
    CHUNK_BYTES, DEFAULT_ID_COLUMN, INPUT_ERROR_COLUMN, ON_DUPLICATE_ID, RENAME_SEPARATOR, ROWS_PER_CHUNK, BadRow, Chunk,
    DatasetError, DuplicateId, Layout, Reader, Scan,
)
from runner.readers.csv import CsvReader
from runner.readers.hub import HubReader, hub_uri
from runner.readers.jsonl import JsonlReader
from runner.readers.parquet import ParquetReader
from runner.readers.synthetic import SyntheticReader, synthetic_row
from runner.schema import DatasetConfig, DatasetSource

ASSETS = Path(__file__).resolve().parents[1] / "assets"
FILE_READERS = {"jsonl": JsonlReader, "parquet": ParquetReader, "csv": CsvReader}
FILE_SOURCES = ("bundled",) + tuple(FILE_READERS)
SOURCES = FILE_SOURCES + ("hub", "synthetic")
# A bundled file's format, from its name.
SUFFIX_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}

__all__ = [
    "ASSETS", "CHUNK_BYTES", "DEFAULT_ID_COLUMN", "FILE_SOURCES", "INPUT_ERROR_COLUMN", "ON_DUPLICATE_ID", "RENAME_SEPARATOR",
    "ROWS_PER_CHUNK", "SOURCES", "BadRow", "Chunk", "CsvReader", "DatasetError", "DuplicateId", "HubReader", "JsonlReader", "Layout",
    "ParquetReader", "Reader", "Scan", "SyntheticReader", "file_format", "for_dataset", "id_column", "hub_uri", "synthetic_row",
]


def file_format(dataset: DatasetConfig) -> str:
    """jsonl, parquet or csv for a file source (a bundled file's from its suffix)."""
    if dataset.source != DatasetSource.bundled:
        return dataset.source.value
    suffix = Path(dataset.path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise DatasetError(f"dataset.path={dataset.path!r}: unknown file type '{suffix}'; use .jsonl, .parquet or .csv")
    return SUFFIX_FORMATS[suffix]


def for_dataset(
    dataset: DatasetConfig, text_columns: Iterable[str] = (), base: Optional[Path] = None, rows_per_chunk: int = ROWS_PER_CHUNK,
) -> Reader:
    """The reader for the dataset group's settings. `text_columns`: the columns the prompt
    reads, so that a row whose text is missing, null, not text or empty is a failed row.
    Nothing is read yet; relative local paths are taken from `base` (default: cwd)."""
    source = dataset.source
    if source not in SOURCES:
        raise DatasetError(f"dataset.source={str(source)!r}: use one of {', '.join(SOURCES)}")
    settings = dict(
        limit=dataset.limit,
        id_column=dataset.id_column,
        # The readers take plain strings (and write them into the input's fingerprint).
        on_duplicate_id=dataset.on_duplicate_id.value,
        text_columns=text_columns,
        rows_per_chunk=rows_per_chunk,
    )
    if source == DatasetSource.synthetic:
        return SyntheticReader(dataset.num_rows, dataset.input_tokens, **settings)
    path = dataset.path
    if not path:
        raise DatasetError(f"dataset.path is not set (dataset.source={source}). Fix: dataset.path=<file, folder or URI>")
    if source == DatasetSource.hub:
        return HubReader(path, dataset.hub_config, dataset.split or "train", **settings)
    setting = f"dataset.path={path!r}"
    try:
        # A bundled dataset given a path of its own (`python -m runner dataset.path=s3://...`)
        # reads that; a bare name is a file in runner/assets.
        bundled_asset = source == DatasetSource.bundled and not storage.is_uri(path) and not Path(path).is_absolute()
        location = storage.resolve(str(ASSETS / path) if bundled_asset else path, base)
    except storage.StorageError as error:
        raise DatasetError(f"{setting}: {error}. Fix: a local path or a URI pyarrow can open (s3://, gs://, hf://...)") from error
    return FILE_READERS[file_format(dataset)](location, setting=setting, path_setting=path, **settings)


def id_column(dataset: DatasetConfig) -> str:
    """The column that holds each row's id in the rows and results: dataset.id_column, or
    `id` (the data's own, or the one derived from file and line)."""
    return dataset.id_column or DEFAULT_ID_COLUMN
