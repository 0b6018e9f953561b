"""Finding and opening data files: a run's results/ and failed/, on any storage.

Writers leave hidden and underscore-prefixed files beside the data (staging files,
_SUCCESS markers, quarantined partial files); `Location.list_files` skips them for every
reader. A file's format is read from its name, never from the config, so an edited config
cannot make readable results look broken.
"""

from __future__ import annotations

from typing import List

import pyarrow as pa

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


def is_json(path: str) -> bool:
    return str(path).endswith(JSON_SUFFIXES)


def read_table(fs, path: str, columns: List[str] = None) -> pa.Table:
    """One whole results or failed file (a few columns of it, if named)."""
    if is_json(path):
        import pyarrow.json as pj

        with fs.open_input_stream(path) as stream:
            table = pj.read_json(stream)
        return table.select([c for c in columns if c in table.column_names]) if columns else table
    import pyarrow.parquet as pq

    with fs.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        present = parquet.schema_arrow.names
        return parquet.read(columns=[c for c in columns if c in present] if columns else None)


def read_column(fs, path: str, column: str) -> List[str]:
    table = read_table(fs, path, [column])
    if column not in table.column_names:
        raise KeyError(f"{path} has no column {column!r}")
    return [str(v) for v in table[column].to_pylist()]


def row_keys(table: pa.Table, id_column: str) -> List[str]:
    """What a run accounts each result row by: its id, and its sample index where it has one."""
    from runner import samples

    if id_column not in table.column_names:
        raise KeyError(f"no column {id_column!r}")
    indexes = table[samples.SAMPLE_COLUMN].to_pylist() if samples.SAMPLE_COLUMN in table.column_names else None
    return samples.keys(table[id_column].to_pylist(), indexes)


def read_keys(fs, path: str, id_column: str) -> List[str]:
    from runner import samples

    return row_keys(read_table(fs, path, [id_column, samples.SAMPLE_COLUMN]), id_column)


def open_dataset(folder, fmt: str = None):
    """A pyarrow dataset over a folder Location's files, read lazily, a few columns at a time.

    Parquet and JSON files are opened as two datasets and unioned where both are present
    (a run's format never changes, but a folder may hold both after an edit).
    """
    import pyarrow.dataset as pds

    entries = folder.list_files()
    json_files = [e.path for e in entries if is_json(e.path)]
    parquet_files = [e.path for e in entries if not is_json(e.path)]
    parts = []
    for files, file_format in ((parquet_files, pds.ParquetFileFormat()), (json_files, pds.JsonFileFormat())):
        if files:
            # A file whose rows all lack a value (every row failed, no reference text) has
            # null-typed columns; one schema unified over every file reads them all.
            schemas = [pds.dataset(f, filesystem=folder.fs, format=file_format).schema for f in files]
            schema = pa.unify_schemas(schemas, promote_options="permissive")
            parts.append(pds.dataset(files, filesystem=folder.fs, format=file_format, schema=schema))
    if not parts:
        return pds.dataset([], schema=pa.schema([]), format="parquet")
    return parts[0] if len(parts) == 1 else pds.dataset(parts)


def list_files(path) -> list:
    """The data files of a local folder (or the file itself), as paths."""
    from pathlib import Path

    from runner import storage

    return [Path(e.path) for e in storage.resolve(str(path)).list_files()]
