"""CSV files with a header row: one chunk per file.

Every column is text, as written: CSV has no types, and a guess made per file (or per
block) would give the same column two types. Rows are numbered from 1 after the header,
blank lines left out; a row with the wrong number of fields or bytes that are not UTF-8
is a failed row named by file and row. Python's csv module, not Arrow's, so that such a
row stays a row instead of failing or vanishing from the whole file.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa

from runner.readers.base import (
    ABSENT, UNREADABLE, DEFAULT_ID_COLUMN, Chunk, Collector, DatasetError, Layout, Reader, Scan, chunk_table, keep_positions,
    layout_schema, text_problem,
)

# Undecodable bytes, kept by errors="surrogateescape" so one bad byte fails its row only.
_UNDECODED = re.compile("[\udc80-\udcff]")
# An article is longer than csv's default 128 KiB field limit.
FIELD_LIMIT = 1 << 30
NOT_UTF8 = "not UTF-8 text"


def _clean(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class CsvReader(Reader):
    source = "csv"
    extensions = (".csv",)

    def _records(self, path: str, relative: str) -> Iterator[Tuple[int, Optional[List[str]], List[str], Optional[str]]]:
        """(row number, header, fields, why the row is bad) per data row; the header first
        as row 0 with no fields."""
        csv.field_size_limit(FIELD_LIMIT)
        with self.location.fs.open_input_stream(path) as stream:
            text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
            rows = csv.reader(text)
            header: Optional[List[str]] = None
            number = 0
            try:
                for fields in rows:
                    if not fields:
                        continue
                    if header is None:
                        header = [_clean(name) for name in fields]
                        yield 0, header, [], None
                        continue
                    number += 1
                    problem = None
                    if any(_UNDECODED.search(f) for f in fields):
                        problem = NOT_UTF8
                    elif len(fields) != len(header):
                        problem = f"{len(fields)} fields where the header has {len(header)}"
                    yield number, header, fields, problem
            except csv.Error as error:
                raise DatasetError(
                    f"{self.setting}: {relative} line {rows.line_num}: {error}. Fix: repair the file (CSV with a header row)"
                ) from error

    def _rows(self, path: str, relative: str) -> Iterator[Tuple[int, Dict[str, Any], Optional[str]]]:
        for number, header, fields, problem in self._records(path, relative):
            if number:
                yield number, dict(zip(header, fields)), problem

    def _header(self) -> List[str]:
        for entry in self.files():
            header = None
            for number, names, _, _ in self._records(entry.path, entry.relative):
                if number == 0:
                    header = names
                else:
                    return header
        raise self.empty_error()

    def columns(self) -> List[str]:
        return self._header()

    def column_types(self) -> Dict[str, Optional[pa.DataType]]:
        return {name: pa.string() for name in self._header()}

    def head(self, n: int) -> List[Dict[str, Any]]:
        wanted, rows, seen = self._head_limit(n), [], 0
        for entry in self.files():
            for _, row, problem in self._rows(entry.path, entry.relative):
                if seen >= wanted:
                    return rows
                seen += 1
                if problem is None and not any(text_problem(row, c) for c in self.text_columns):
                    rows.append(row)
        return rows

    def scan(self) -> Scan:
        collector = Collector(self.limit)
        id_name = self.id_column or DEFAULT_ID_COLUMN
        names: Dict[str, None] = {}
        for entry in self.files():
            if collector.full:
                break
            collector.start(relative=entry.relative, path=entry.path, first=1, size=entry.size)
            for number, header, fields, problem in self._records(entry.path, entry.relative):
                if number == 0:
                    if self.id_column and self.id_column not in header:
                        raise self.id_column_error(header)
                    names.update(dict.fromkeys(header))
                    continue
                row = dict(zip(header, fields))
                problems = [problem] if problem else []
                problems += [p for p in (text_problem(row, c) for c in self.text_columns) if p]
                # An id with undecodable bytes would not survive as text: the row's id is derived.
                raw_id = UNREADABLE if problem == NOT_UTF8 else row.get(id_name, ABSENT)
                collector.add(number, raw_id, problems)
                if collector.full:
                    break
            collector.end()
        derived_ids = self.id_column is None and DEFAULT_ID_COLUMN not in names
        layout = Layout(layout_schema([(name, pa.string()) for name in names], id_name), id_name)
        return self._finish(collector, layout, derived_ids, {})

    def read_chunk(self, chunk: Chunk, layout: Layout, skip: Sequence[int] = ()) -> pa.Table:
        rows = []
        for number, row, _ in self._rows(chunk.path, chunk.relative):
            rows.append(row)
            if number >= chunk.rows:  # a chunk is a whole file from its first row, up to the limit
                break
        if len(rows) < chunk.rows:
            raise OSError(f"{chunk.relative}: {len(rows)} rows where the scan found {chunk.rows}: the file changed during the run")
        keep = keep_positions(chunk.rows, skip)
        return chunk_table(chunk, layout, keep, lambda field: [_value(rows[p].get(field.name)) for p in keep])


def _value(value: Optional[str]) -> Optional[str]:
    return None if value is None else (_clean(value) if _UNDECODED.search(value) else value)
