"""Row accounting after the pipeline: every input row is in results/ or in failed/, once.

Failed rows travel through the pipeline beside good ones (one streaming pass, nothing held
in the driver) and are moved to failed/ here, one results file at a time. The pass is
idempotent, so a run killed during it is finished by running it again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List

import pyarrow as pa
import pyarrow.compute as pc

from runner.result_files import list_files
from runner.results import ERROR_COLUMN

FAILED_DIR = "failed"


@dataclass
class RowCounts:
    rows_in: int
    rows_ok: int
    rows_failed: int
    duplicate_rows: int

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_ok + self.rows_failed and self.duplicate_rows == 0

    def as_dict(self) -> dict:
        return asdict(self)


def _read(path: Path, fmt: str) -> pa.Table:
    if fmt == "jsonl":
        import pyarrow.json as pj

        return pj.read_json(path)
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _write_atomic(table: pa.Table, path: Path, fmt: str) -> None:
    staging = path.with_name(f".{path.name}.tmp")
    if fmt == "jsonl" or path.suffix == ".jsonl":
        with open(staging, "w", encoding="utf-8") as handle:
            for row in table.to_pylist():
                handle.write(json.dumps(row, default=str) + "\n")
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, staging)
    os.replace(staging, path)


def drop_unreadable(results_dir: Path, fmt: str) -> List[Path]:
    """Remove result files a killed run left half-written; their rows were never checkpointed."""
    dropped = []
    for path in list_files(results_dir):
        try:
            _read(path, fmt)
        except (pa.ArrowInvalid, OSError):
            path.unlink()
            dropped.append(path)
    return dropped


def settle(run_dir: Path, fmt: str, id_column: str, rows_in: int) -> RowCounts:
    """Move failed rows from results/ to failed/ and count every row once."""
    results_dir, failed_dir = run_dir / "results", run_dir / FAILED_DIR
    ok_ids, failed_ids = [], []
    for path in list_files(results_dir):
        table = _read(path, fmt)
        if ERROR_COLUMN in table.column_names and table.num_rows:
            failed_mask = pc.not_equal(pc.fill_null(table[ERROR_COLUMN], ""), "")
            if pc.any(failed_mask).as_py():
                failed_dir.mkdir(exist_ok=True)
                failed = table.filter(failed_mask).select(
                    [id_column, ERROR_COLUMN] + [c for c in table.column_names if c not in (id_column, ERROR_COLUMN)]
                )
                # Failed rows first: if the run dies between the two writes, the next pass
                # finds them still in results/ and writes the same failed file again.
                _write_atomic(failed, failed_dir / f"{path.stem}.jsonl", "jsonl")
                table = table.filter(pc.invert(failed_mask))
                _write_atomic(table, path, fmt)
        ok_ids.append(table[id_column].cast(pa.string()))
    for path in list_files(failed_dir):
        failed_ids.append(_read(path, "jsonl")[id_column].cast(pa.string()))
    all_ids = pa.chunked_array(ok_ids + failed_ids, type=pa.string())
    rows_ok = sum(len(a) for a in ok_ids)
    rows_failed = sum(len(a) for a in failed_ids)
    distinct = pc.count_distinct(all_ids).as_py() if len(all_ids) else 0
    return RowCounts(rows_in=rows_in, rows_ok=rows_ok, rows_failed=rows_failed, duplicate_rows=len(all_ids) - distinct)
