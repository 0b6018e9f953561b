"""Parquet files (a file or a folder of them): one chunk per row group.

The scan reads each file's footer, the id column, and a text column only where the row
group's statistics cannot rule out a null or empty value, so it costs a small part of one
read of the data. A column whose type differs between files takes the type both widen
to, or text where none exists.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from runner.readers.base import (
    ABSENT, DEFAULT_ID_COLUMN, INPUT_ERROR_COLUMN, Chunk, Collector, Layout, Reader, Scan, keep_positions, layout_schema,
    text_problem,
)
from runner.readers import values
from runner.storage import FileEntry


def plain_type(data_type: pa.DataType) -> pa.DataType:
    return data_type.value_type if pa.types.is_dictionary(data_type) else data_type


def is_text(data_type: pa.DataType) -> bool:
    data_type = plain_type(data_type)
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type)


def _stats_say_fine(row_group: pq.RowGroupMetaData, index: int) -> bool:
    """True where the footer proves the column has no null, empty or blank value here:
    no nulls, and the smallest value starts above ' ' (whitespace sorts below it)."""
    stats = row_group.column(index).statistics
    if stats is None or not stats.has_null_count or stats.null_count or not stats.has_min_max:
        return False
    smallest = stats.min
    if isinstance(smallest, bytes):
        smallest = smallest.decode("utf-8", "replace")
    return isinstance(smallest, str) and smallest[:1] > " "


class ParquetReader(Reader):
    source = "parquet"
    extensions = (".parquet", ".pq")

    def _open(self, path: str) -> pq.ParquetFile:
        return pq.ParquetFile(self.location.fs.open_input_file(path))

    def _first_schema(self) -> pa.Schema:
        for entry in self.files():
            meta = self._open(entry.path).metadata
            if meta.num_rows:
                return meta.schema.to_arrow_schema()
        raise self.empty_error()

    def columns(self) -> List[str]:
        return list(self._first_schema().names)

    def column_types(self) -> Dict[str, Optional[pa.DataType]]:
        schema = self._first_schema()
        return {name: plain_type(schema.field(name).type) for name in schema.names}

    def head(self, n: int) -> List[Dict[str, Any]]:
        wanted, rows, seen = self._head_limit(n), [], 0
        for entry in self.files():
            for batch in self._open(entry.path).iter_batches(batch_size=min(max(wanted, 1), 1024)):
                for row in batch.to_pylist():
                    if seen >= wanted:
                        return rows
                    seen += 1
                    if not any(text_problem(row, c) for c in self.text_columns):
                        rows.append(row)
        return rows

    def scan(self) -> Scan:
        collector = Collector(self.limit)
        id_name = self.id_column or DEFAULT_ID_COLUMN
        types: Dict[str, List[pa.DataType]] = {}
        for entry in self.files():
            if collector.full:
                break
            parquet = self._open(entry.path)
            schema = parquet.schema_arrow
            if not parquet.metadata.num_rows:
                continue
            for field in schema:
                types.setdefault(field.name, []).append(plain_type(field.type))
            if self.id_column and self.id_column not in schema.names:
                raise self.id_column_error(schema.names)
            self._scan_file(entry, parquet, schema, id_name, collector)
        columns, encoded = _unify(types)
        names = [name for name, _ in columns]
        derived_ids = self.id_column is None and DEFAULT_ID_COLUMN not in names
        layout = Layout(layout_schema(columns, id_name), id_name, tuple(c for c in encoded if c != id_name))
        encoded.pop(id_name, None)
        return self._finish(collector, layout, derived_ids, encoded)

    def _scan_file(self, entry: FileEntry, parquet: pq.ParquetFile, schema: pa.Schema, id_name: str, collector: Collector) -> None:
        meta = parquet.metadata
        leaf = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
        first = 1
        for group in range(meta.num_row_groups):
            if collector.full:
                return
            group_meta = meta.row_group(group)
            count = group_meta.num_rows
            if not count:
                continue
            take = count if collector.limit is None else min(count, collector.limit - collector.rows)
            fixed: List[str] = []  # problems every row of the group has
            wanted = [id_name] if id_name in schema.names else []
            for column in self.text_columns:
                if column not in schema.names:
                    fixed.append(f"column '{column}' is missing")
                elif not is_text(schema.field(column).type):
                    fixed.append(f"column '{column}' is {plain_type(schema.field(column).type)}, not text")
                elif column not in leaf or not _stats_say_fine(group_meta, leaf[column]):
                    wanted.append(column)
            table = parquet.read_row_group(group, columns=list(dict.fromkeys(wanted))).slice(0, take) if wanted else None
            raw_ids = table.column(id_name).to_pylist() if table is not None and id_name in table.column_names else [ABSENT] * take
            checked = [c for c in self.text_columns if table is not None and c in table.column_names and c in wanted]
            texts = {c: table.column(c).to_pylist() for c in checked}
            collector.start(relative=entry.relative, path=entry.path, first=first, row_group=group, size=group_meta.total_byte_size)
            for i in range(take):
                problems = fixed + [p for p in (text_problem({c: texts[c][i]}, c) for c in checked) if p] if (fixed or checked) else ()
                collector.add(first + i, raw_ids[i], problems)
            collector.end()
            first += count

    def read_chunk(self, chunk: Chunk, layout: Layout, skip: Sequence[int] = ()) -> pa.Table:
        table = self._open(chunk.path).read_row_group(chunk.row_group)
        if table.num_rows < chunk.rows:
            raise OSError(f"{chunk.relative}: row group {chunk.row_group} has {table.num_rows} rows where the scan found {chunk.rows}: the file changed during the run")
        keep = keep_positions(chunk.rows, skip)
        table = table.slice(0, chunk.rows)
        if len(keep) < chunk.rows:
            table = table.take(pa.array(keep, pa.int64()))
        arrays = []
        for field in layout.schema:
            if field.name == layout.id_column:
                arrays.append(pa.array([chunk.ids[p] for p in keep], pa.string()))
            elif field.name == INPUT_ERROR_COLUMN:
                arrays.append(pa.array([chunk.errors.get(p, "") for p in keep], pa.string()))
            elif field.name not in table.column_names:
                arrays.append(pa.nulls(len(keep), field.type))
            elif field.name in layout.encoded:
                arrays.append(values.table({field.name: [_as_text(v) for v in table.column(field.name).to_pylist()]}, pa.schema([field])).column(0))
            else:
                arrays.append(table.column(field.name).cast(field.type))
        return pa.Table.from_arrays(arrays, schema=layout.schema)

def _as_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _unify(types: Dict[str, List[pa.DataType]]) -> Tuple[List[Tuple[str, pa.DataType]], Dict[str, List[str]]]:
    """One type per column over the files: the same, the one they widen to, or text."""
    columns, encoded = [], {}
    for name, seen in types.items():
        distinct = list(dict.fromkeys(seen))
        if len(distinct) == 1:
            columns.append((name, distinct[0]))
            continue
        try:
            unified = pa.unify_schemas([pa.schema([(name, t)]) for t in distinct], promote_options="permissive").field(name).type
            columns.append((name, unified))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            columns.append((name, pa.string()))
            encoded[name] = [str(t) for t in distinct]
    return columns, encoded
