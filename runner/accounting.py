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
from dataclasses import asdict, dataclass
from typing import Set

import pyarrow as pa
import pyarrow.compute as pc

from runner import faults, result_files
from runner.results import ERROR_COLUMN
from runner.run_state import FAILED, RESULTS
from runner.storage import Location

log = logging.getLogger(__name__)

FAILED_DIR = FAILED


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


def settle(run: Location, id_column: str, rows_in: int) -> RowCounts:
    """Move failed rows from results/ to failed/, drop rows a retried write repeated, count."""
    results, failed = run.child(RESULTS), run.child(FAILED)
    seen: Set[str] = set()
    rows_ok = rows_failed = duplicates = 0
    # failed/ first: a row moved there by an earlier, killed pass is already accounted for.
    for entry in failed.list_files():
        ids = result_files.read_column(failed.fs, entry.path, id_column)
        new = set(ids) - seen
        duplicates += len(ids) - len(new)
        seen.update(new)
        rows_failed += len(new)
    for entry in results.list_files():
        table = result_files.read_table(results.fs, entry.path)
        ids = table[id_column].cast(pa.string())
        keep = pc.invert(pc.is_in(ids, value_set=pa.array(sorted(seen), type=pa.string())))
        if ERROR_COLUMN in table.column_names:
            is_failed = pc.not_equal(pc.fill_null(table[ERROR_COLUMN], ""), "")
        else:
            is_failed = pa.array([False] * table.num_rows)
        newly_failed = table.filter(pc.and_(keep, is_failed))
        if newly_failed.num_rows:
            # Failed rows first: if the run dies between the two writes, the next pass finds
            # them in failed/ and drops them from results/.
            ordered = [id_column, ERROR_COLUMN] + [c for c in newly_failed.column_names if c not in (id_column, ERROR_COLUMN)]
            failed.child(_failed_name(entry.relative)).write_bytes(_serialize(newly_failed.select(ordered), True))
            faults.reached("failed_rows_moved")
            rows_failed += newly_failed.num_rows
            seen.update(newly_failed[id_column].cast(pa.string()).to_pylist())
        ok = table.filter(pc.and_(keep, pc.invert(is_failed)))
        repeated = ok.num_rows - pc.count_distinct(ok[id_column]).as_py() if ok.num_rows else 0
        if repeated:
            first = _first_occurrence(ok[id_column].cast(pa.string()).to_pylist())
            ok = ok.filter(pa.array(first))
        if ok.num_rows != table.num_rows:
            dropped = table.num_rows - ok.num_rows - newly_failed.num_rows
            if dropped:
                log.warning("%s repeated %d row(s) already written elsewhere (a retried write); kept once", entry.relative, dropped)
            target = results.child(entry.relative)
            if ok.num_rows:
                target.write_bytes(_serialize(ok, result_files.is_json(entry.path)))
            else:
                target.delete()  # every row of it is in failed/ now
        seen.update(ok[id_column].cast(pa.string()).to_pylist())
        rows_ok += ok.num_rows
    return RowCounts(rows_in=rows_in, rows_ok=rows_ok, rows_failed=rows_failed, duplicate_rows=duplicates)


def _first_occurrence(ids):
    seen, keep = set(), []
    for value in ids:
        keep.append(value not in seen)
        seen.add(value)
    return keep
