"""Row accounting after the pipeline: every input row is in results/ or in failed/, once.

Failed rows travel through the pipeline beside good ones (one streaming pass, nothing held
in the driver) and are moved to failed/ here, one results file at a time. A row that a
retried write left in two files is kept in the first only. Every rewrite is whole-file and
the pass is idempotent, so a run killed during it is finished by running it again.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Set

import pyarrow as pa

from runner import faults, result_files
from runner.results import ERROR_COLUMN
from runner.run_state import FAILED, RESULTS
from runner.storage import Location

log = logging.getLogger(__name__)

FAILED_DIR = FAILED


@dataclass
class RowCounts:
    rows_in: int  # input rows
    rows_ok: int  # result rows: one per input row, or one per sample with prompt.n > 1
    rows_failed: int
    duplicate_rows: int
    samples_per_row: int = 1

    @property
    def balanced(self) -> bool:
        return self.rows_in * self.samples_per_row == self.rows_ok + self.rows_failed and self.duplicate_rows == 0

    def as_dict(self) -> dict:
        if self.samples_per_row == 1:
            return {"rows_in": self.rows_in, "rows_ok": self.rows_ok, "rows_failed": self.rows_failed, "duplicate_rows": self.duplicate_rows}
        # Inputs and samples counted apart, so that nobody reads 96 samples as 96 rows.
        return {
            "rows_in": self.rows_in, "samples_per_row": self.samples_per_row, "samples_in": self.rows_in * self.samples_per_row,
            "samples_ok": self.rows_ok, "samples_failed": self.rows_failed, "duplicate_samples": self.duplicate_rows,
        }


def _serialize(table: pa.Table, as_json: bool) -> bytes:
    if as_json:
        return "".join(json.dumps(row, default=str) + "\n" for row in table.to_pylist()).encode("utf-8")
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _failed_name(relative: str) -> str:
    stem = posixpath.splitext(relative.replace("/", "__"))[0]
    return f"{stem}.jsonl"


def settle(run: Location, id_column: str, rows_in: int, samples_per_row: int = 1) -> RowCounts:
    """Move failed rows from results/ to failed/, drop rows a retried write repeated, count.

    Rows are told apart by their key: the id, and the sample index where prompt.n > 1.
    """
    results, failed = run.child(RESULTS), run.child(FAILED)
    seen: Set[str] = set()
    rows_ok = rows_failed = duplicates = 0
    # failed/ first: a row moved there by an earlier, killed pass is already accounted for.
    for entry in failed.list_files():
        keys = result_files.read_keys(failed.fs, entry.path, id_column)
        new = set(keys) - seen
        duplicates += len(keys) - len(new)
        seen.update(new)
        rows_failed += len(new)
    for entry in results.list_files():
        table = result_files.read_table(results.fs, entry.path)
        keys = result_files.row_keys(table, id_column)
        if ERROR_COLUMN in table.column_names:
            errors = table[ERROR_COLUMN].to_pylist()
        else:
            errors = [None] * table.num_rows
        keep_failed, keep_ok, first_here = [], [], set()
        for row_key, error in zip(keys, errors):
            fresh = row_key not in seen and row_key not in first_here
            first_here.add(row_key)
            keep_failed.append(fresh and bool(error))
            keep_ok.append(fresh and not error)
        newly_failed = table.filter(pa.array(keep_failed, type=pa.bool_()))
        if newly_failed.num_rows:
            # Failed rows first: if the run dies between the two writes, the next pass finds
            # them in failed/ and drops them from results/.
            ordered = [id_column, ERROR_COLUMN] + [c for c in newly_failed.column_names if c not in (id_column, ERROR_COLUMN)]
            failed.child(_failed_name(entry.relative)).write_bytes(_serialize(newly_failed.select(ordered), True))
            faults.reached("failed_rows_moved")
            rows_failed += newly_failed.num_rows
        ok = table.filter(pa.array(keep_ok, type=pa.bool_()))
        if ok.num_rows != table.num_rows:
            dropped = table.num_rows - ok.num_rows - newly_failed.num_rows
            if dropped:
                log.warning("%s repeated %d row(s) already written elsewhere (a retried write); kept once", entry.relative, dropped)
            target = results.child(entry.relative)
            if ok.num_rows:
                target.write_bytes(_serialize(ok, result_files.is_json(entry.path)))
            else:
                target.delete()  # every row of it is in failed/ now
        seen.update(k for k, kept_f, kept_o in zip(keys, keep_failed, keep_ok) if kept_f or kept_o)
        rows_ok += ok.num_rows
    return RowCounts(rows_in=rows_in, rows_ok=rows_ok, rows_failed=rows_failed, duplicate_rows=duplicates, samples_per_row=samples_per_row)
