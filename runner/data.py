"""Datasets: where the rows come from, what columns they have, and the Ray Dataset that reads them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Mapping, Optional

from runner.result_files import list_files

ASSETS = Path(__file__).resolve().parent / "assets"
FILE_SOURCES = ("bundled", "jsonl", "parquet", "csv")
SOURCES = FILE_SOURCES + ("hub", "synthetic")
SYNTHETIC_COLUMNS = ["id", "prompt"]


class DatasetError(ValueError):
    pass


def local_path(dataset: Mapping[str, Any]) -> Path:
    if dataset["source"] == "bundled":
        return ASSETS / dataset["path"]
    return Path(dataset["path"]).expanduser().resolve()


def file_format(dataset: Mapping[str, Any]) -> str:
    if dataset["source"] != "bundled":
        return dataset["source"]
    suffix = Path(dataset["path"]).suffix.lstrip(".")
    return {"json": "jsonl"}.get(suffix, suffix)


def peek_columns(dataset: Mapping[str, Any]) -> Optional[List[str]]:
    """Column names, read cheaply on the driver (first record or file schema).

    None where that would need the network (hub datasets). Raises DatasetError for a
    missing path or an empty dataset, naming the field and the fix.
    """
    source = dataset["source"]
    if source not in SOURCES:
        raise DatasetError(f"dataset.source={source!r}: use one of {', '.join(SOURCES)}")
    if source == "synthetic":
        if dataset["num_rows"] < 1:
            raise DatasetError("dataset.num_rows must be at least 1")
        return list(SYNTHETIC_COLUMNS)
    if source == "hub":
        return None
    path = local_path(dataset)
    if not path.exists():
        raise DatasetError(f"dataset.path={dataset['path']!r}: {path} does not exist. Fix: give an existing file or folder")
    files = list_files(path)
    if not files:
        raise DatasetError(f"dataset.path={dataset['path']!r}: the folder {path} holds no files")
    fmt = file_format(dataset)
    if fmt == "jsonl":
        for file in files:
            with open(file, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        return list(json.loads(line).keys())
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        for file in files:
            meta = pq.ParquetFile(file).metadata
            if meta.num_rows:
                return list(meta.schema.to_arrow_schema().names)
    elif fmt == "csv":
        import csv

        for file in files:
            with open(file, encoding="utf-8", newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None)
                if header and next(reader, None) is not None:
                    return header
    else:
        raise DatasetError(f"dataset.path={dataset['path']!r}: unknown file type '{fmt}'; use .jsonl, .parquet or .csv")
    raise DatasetError(f"dataset.path={dataset['path']!r}: the dataset is empty (no rows). Fix: point it at data with rows")


def count_rows(dataset: Mapping[str, Any], hub_token: Optional[str] = None) -> int:
    """Input rows (after `limit`), counted by streaming through the files, never loading them."""
    source, limit = dataset["source"], dataset.get("limit")
    if source == "synthetic":
        total = int(dataset["num_rows"])
    elif source == "hub":
        import datasets

        total = len(datasets.load_dataset(dataset["path"], dataset.get("hub_config"), split=dataset["split"], token=hub_token))
    else:
        fmt, files = file_format(dataset), list_files(local_path(dataset))
        if fmt == "parquet":
            import pyarrow.parquet as pq

            total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        elif fmt == "csv":
            import pyarrow.csv as pcsv

            total = sum(batch.num_rows for f in files for batch in pcsv.open_csv(f))
        else:
            total = 0
            for f in files:
                with open(f, encoding="utf-8") as handle:
                    total += sum(1 for line in handle if line.strip())
    return min(total, int(limit)) if limit else total


def head_rows(dataset: Mapping[str, Any], n: int) -> Optional[List[dict]]:
    """The first n input rows, read on the driver (None for hub datasets: no network here)."""
    source = dataset["source"]
    if source == "hub":
        return None
    if source == "synthetic":
        count = min(n, int(dataset["num_rows"]))
        return [synthetic_row(i, int(dataset["input_tokens"])) for i in range(count)]
    fmt, rows = file_format(dataset), []
    for f in list_files(local_path(dataset)):
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(f).iter_batches(batch_size=min(n, 1024)):
                rows.extend(batch.to_pylist())
                if len(rows) >= n:
                    return rows[:n]
        elif fmt == "csv":
            import csv

            with open(f, encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    rows.append(row)
                    if len(rows) >= n:
                        return rows
        else:
            with open(f, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        rows.append(json.loads(line))
                        if len(rows) >= n:
                            return rows
    return rows


def read(dataset: Mapping[str, Any], hub_token: Optional[str] = None):
    """The Ray Dataset of input rows (lazy: nothing is read until the pipeline runs)."""
    import ray.data

    source = dataset["source"]
    if source == "synthetic":
        ds = _synthetic(dataset)
    elif source == "hub":
        import datasets

        split = dataset["split"] + (f"[:{dataset['limit']}]" if dataset.get("limit") else "")
        hf = datasets.load_dataset(dataset["path"], dataset.get("hub_config"), split=split, token=hub_token)
        ds = ray.data.from_huggingface(hf)
    else:
        path = str(local_path(dataset))
        reader = {"jsonl": ray.data.read_json, "parquet": ray.data.read_parquet, "csv": ray.data.read_csv}[file_format(dataset)]
        ds = reader(path)
    if dataset.get("limit"):
        ds = ds.limit(int(dataset["limit"]))
    return ds


def synthetic_row(index: int, words: int) -> dict:
    # One short common word is one token in every tokenizer we use, so a prompt of N words
    # is close to N tokens; the engine's own count is what gets reported.
    return {"id": f"synthetic-{index:08d}", "prompt": " ".join(["hello"] * words) + f" {index}"}


def _synthetic(dataset: Mapping[str, Any]):
    import ray.data

    words_per_prompt = int(dataset["input_tokens"])

    def make_rows(batch):
        rows = [synthetic_row(int(i), words_per_prompt) for i in batch["id"]]
        return {column: [row[column] for row in rows] for column in SYNTHETIC_COLUMNS}

    return ray.data.range(int(dataset["num_rows"])).map_batches(make_rows, batch_format="numpy")
