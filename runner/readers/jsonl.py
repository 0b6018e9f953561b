"""JSON lines: one object per line, in .jsonl/.json/.ndjson files (the bundled sample too).

Chunks are byte ranges of about `rows_per_chunk` lines, so a task reads its range with
one ranged read (local disk or object storage) and never the whole file. A line that is
not UTF-8, not JSON, or not an object is a failed row named by file and line; a UTF-8 BOM
at the start of a file is skipped; blank lines are not rows but keep their line numbers.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa

from runner.readers import values
from runner.readers.base import (
    ABSENT, CHUNK_BYTES, UNREADABLE, DEFAULT_ID_COLUMN, Chunk, Collector, DatasetError, Layout, Reader, Scan, chunk_table,
    keep_positions, layout_schema, text_problem,
)
from runner.storage import FileEntry

BOM = b"\xef\xbb\xbf"
READ_BLOCK = 1 << 20


def parse(line: bytes) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """The line's object, or None and why it is not one."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"not UTF-8 text (byte 0x{line[error.start]:02x} at column {error.start + 1})"
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        return None, f"not valid JSON ({error.msg} at column {error.colno})"
    if not isinstance(row, dict):
        return None, f"a JSON {type(row).__name__}, not an object"
    return row, None


def is_blank(line: bytes) -> bool:
    return not line.strip()


def iter_lines(stream, offset: int = 0) -> Iterator[Tuple[int, bytes, int]]:
    """(start offset, line without its newline, end offset after the newline), from `offset`."""
    pending = b""
    start = offset
    while True:
        block = stream.read(READ_BLOCK)
        if not block:
            break
        pending += block
        cut = 0
        while True:
            newline = pending.find(b"\n", cut)
            if newline < 0:
                break
            yield start, pending[cut:newline], start + newline - cut + 1
            start += newline - cut + 1
            cut = newline + 1
        pending = pending[cut:]
    if pending:
        yield start, pending, start + len(pending)


def _strip_bom(offset: int, line: bytes) -> bytes:
    return line[len(BOM):] if offset == 0 and line.startswith(BOM) else line


class JsonlReader(Reader):
    source = "jsonl"
    extensions = (".jsonl", ".json", ".ndjson")
    unit = "line"

    def _rows(self, entry: FileEntry) -> Iterator[Tuple[int, int, int, Optional[Dict[str, Any]], Optional[str]]]:
        """(line number, start, end, object or None, why not) per non-blank line of the file."""
        with self.location.fs.open_input_stream(entry.path) as stream:
            for number, (start, line, end) in enumerate(iter_lines(stream), start=1):
                line = _strip_bom(start, line)
                if is_blank(line):
                    continue
                row, problem = parse(line)
                yield number, start, end, row, problem

    def columns(self) -> List[str]:
        return list(self._first_row())

    def column_types(self) -> Dict[str, Optional[pa.DataType]]:
        # JSON has no schema: a value's type can change from one line to the next.
        return {name: None for name in self._first_row()}

    def _first_row(self) -> Dict[str, Any]:
        first_problem = None
        for entry in self.files():
            for number, _, _, row, problem in self._rows(entry):
                if row is not None:
                    return row
                first_problem = first_problem or f"{entry.relative} line {number}: {problem}"
        if first_problem:
            raise DatasetError(f"{self.setting}: no line is a JSON object (first: {first_problem}). Fix: point it at JSON lines, one object per line")
        raise self.empty_error()

    def head(self, n: int) -> List[Dict[str, Any]]:
        wanted, rows, seen = self._head_limit(n), [], 0
        for entry in self.files():
            for _, _, _, row, _ in self._rows(entry):
                if seen >= wanted:
                    return rows
                seen += 1
                if row is not None and not any(text_problem(row, c) for c in self.text_columns):
                    rows.append(row)
        return rows

    def scan(self) -> Scan:
        collector = Collector(self.limit)
        kinds = values.ColumnKinds()
        id_name = self.id_column or DEFAULT_ID_COLUMN
        for entry in self.files():
            if collector.full:
                break
            chunk_start, last_end = None, 0
            for number, start, end, row, problem in self._rows(entry):
                if chunk_start is not None and (collector.open_rows() >= self.rows_per_chunk or end - chunk_start > CHUNK_BYTES):
                    collector.end(length=last_end - chunk_start, size=last_end - chunk_start)
                    chunk_start = None
                if chunk_start is None:
                    collector.start(relative=entry.relative, path=entry.path, first=number, offset=start)
                    chunk_start = start
                if row is None:
                    collector.add(number, UNREADABLE, [problem])
                else:
                    kinds.observe(row)
                    problems = [p for p in (text_problem(row, c) for c in self.text_columns) if p]
                    collector.add(number, row.get(id_name, ABSENT), problems)
                last_end = end
                if collector.full:
                    break
            if chunk_start is not None:
                collector.end(length=last_end - chunk_start, size=last_end - chunk_start)
        columns, encoded = kinds.decide()
        names = [name for name, _ in columns]
        if self.id_column and self.id_column not in names and collector.rows:
            raise self.id_column_error(names)
        derived_ids = self.id_column is None and DEFAULT_ID_COLUMN not in names
        layout = Layout(layout_schema(columns, id_name), id_name, tuple(c for c in encoded if c != id_name))
        encoded.pop(id_name, None)
        return self._finish(collector, layout, derived_ids, encoded)

    def read_chunk(self, chunk: Chunk, layout: Layout, skip: Sequence[int] = ()) -> pa.Table:
        with self.location.fs.open_input_file(chunk.path) as handle:
            data = handle.read_at(chunk.length, chunk.offset)
        rows = []
        for start, line, _ in iter_lines(pa.BufferReader(data), chunk.offset):
            line = _strip_bom(start, line)
            if not is_blank(line):
                rows.append(line)
        if len(rows) != chunk.rows:
            raise OSError(f"{chunk.relative}: {len(rows)} rows at line {chunk.first} where the scan found {chunk.rows}: the file changed during the run")
        keep = keep_positions(chunk.rows, skip)
        parsed = [parse(rows[p])[0] or {} for p in keep]
        encoded = set(layout.encoded)

        def field_values(field):
            convert = values.converter(field.type, field.name in encoded)
            return [convert(row.get(field.name)) for row in parsed]

        return chunk_table(chunk, layout, keep, field_values)

