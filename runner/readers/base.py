"""What every reader shares: the scan's result (Scan, Chunk, BadRow), the file listing and
fingerprint, and the Ray Dataset built from a scan's chunks.

A reader's `scan()` is the one pass over the input on the driver. It decides, once, every
row's id, which rows are failed rows and why, and the Arrow schema of every block; the
Ray tasks only re-read their chunk and apply what the scan decided, so the count, the
ids and the rows the pipeline sees cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.fs as pafs

from runner.errors import RunnerError
from runner.storage import FileEntry, Location

INPUT_ERROR_COLUMN = "__input_error__"
DEFAULT_ID_COLUMN = "id"
ON_DUPLICATE_ID = ("fail", "rename")
# The 2nd, 3rd... occurrence of a duplicate id becomes `<id>#2`, `<id>#3`...
RENAME_SEPARATOR = "#"
# Rows per jsonl chunk (one Ray read task, one block), and a byte cap for long rows.
ROWS_PER_CHUNK = 1000
CHUNK_BYTES = 32 << 20


class DatasetError(RunnerError, ValueError):
    """The input cannot be read as configured; the message names the setting and the fix."""


@dataclass
class BadRow:
    """An input row that becomes a failed row."""

    file: str  # relative to dataset.path
    line: int  # 1-based line (jsonl) or row (parquet, csv; after the header) in that file
    id: str  # the id it carries in the results (derived when its own is unusable)
    reason: str  # what is wrong, e.g. "not valid JSON (Expecting value at column 1)"
    message: str  # its INPUT_ERROR_COLUMN text: "<file> line <n>: <reason>"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class DuplicateId:
    id: str
    where: List[str]  # every "file:line" it occurs at, in file order


@dataclass
class Chunk:
    """One unit of work: a piece of one file, read by one Ray task into one block."""

    index: int
    relative: str  # the file, relative to dataset.path ("" for synthetic rows)
    path: str  # the file in its filesystem
    first: int  # 1-based line (jsonl) / row (parquet, csv) of its first row; synthetic: first index
    ids: List[str]  # its rows' ids, in order (only rows within dataset.limit)
    errors: Dict[int, str] = field(default_factory=dict)  # position in `ids` -> why that row fails
    offset: int = 0  # jsonl: the bytes [offset, offset + length) of the file
    length: int = 0
    row_group: int = -1  # parquet
    size: int = 0  # bytes on disk, an estimate for Ray's planning

    @property
    def rows(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Layout:
    """What a read task needs besides its chunk: the one schema of every block."""

    schema: pa.Schema
    id_column: str
    # Columns whose values in the data have mixed types (or are nested): written as text,
    # strings as they are and anything else as JSON.
    encoded: Tuple[str, ...] = ()


@dataclass
class Scan:
    source: str
    rows: int  # input rows within dataset.limit, failed rows included
    chunks: List[Chunk]
    layout: Layout
    derived_ids: bool  # no id column: each row's id is `<file>:<line or row>`
    bad_rows: List[BadRow]
    # Ids that occur more than once, left as they are: with on_duplicate_id=fail the run
    # must stop on them before any work (duplicate_problem says how).
    duplicate_ids: List[DuplicateId]
    # With on_duplicate_id=rename: the ids whose 2nd, 3rd... occurrences got a suffix.
    renamed_ids: List[DuplicateId]
    on_duplicate_id: str
    ignored_files: List[str]  # files in the folder not of the dataset's format
    encoded_columns: Dict[str, List[str]]  # column -> the value types seen, for the log
    limit: Optional[int]

    @property
    def schema(self) -> pa.Schema:
        return self.layout.schema

    @property
    def id_column(self) -> str:
        return self.layout.id_column

    @property
    def renamed(self) -> int:
        """Occurrences given a suffix."""
        return sum(len(d.where) - 1 for d in self.renamed_ids)

    def ids(self) -> Iterator[str]:
        for chunk in self.chunks:
            yield from chunk.ids

    def duplicate_problem(self, shown: int = 5) -> Optional[str]:
        """The error a run with on_duplicate_id=fail stops on before any work, or None."""
        if not self.duplicate_ids:
            return None
        listed = "; ".join(f"{d.id!r} at {', '.join(d.where[:3])}" for d in self.duplicate_ids[:shown])
        more = f" and {len(self.duplicate_ids) - shown} more" if len(self.duplicate_ids) > shown else ""
        return (
            f"{len(self.duplicate_ids)} id(s) in dataset.id_column={self.id_column!r} occur more than once: {listed}{more}. "
            "Fix: make the ids unique, or dataset.on_duplicate_id=rename (the 2nd, 3rd... occurrence becomes "
            f"<id>{RENAME_SEPARATOR}2, <id>{RENAME_SEPARATOR}3...), or dataset.id_column=null to derive ids from file and line"
        )

    def notes(self) -> List[str]:
        """What the log should say about the input, one line each."""
        lines = []
        if self.derived_ids:
            lines.append(f"the data has no '{DEFAULT_ID_COLUMN}' column: each row's id is <file>:<line or row> (written as column '{self.id_column}')")
        if self.ignored_files:
            shown = ", ".join(self.ignored_files[:10]) + (" ..." if len(self.ignored_files) > 10 else "")
            lines.append(f"ignored {len(self.ignored_files)} file(s) not of the {self.source} format: {shown}")
        if self.bad_rows:
            shown = "; ".join(row.message for row in self.bad_rows[:3])
            lines.append(f"{len(self.bad_rows)} input row(s) will be failed rows: {shown}" + (" ..." if len(self.bad_rows) > 3 else ""))
        if self.renamed:
            lines.append(f"{len(self.renamed_ids)} duplicate id(s): {self.renamed} later occurrence(s) renamed <id>{RENAME_SEPARATOR}<n>")
        for column, kinds in self.encoded_columns.items():
            lines.append(f"column '{column}' holds {', '.join(kinds)} values: written as text (non-text values as JSON)")
        return lines


# ------------------------------------------------------------------ row checks


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()  # a row without the field at all (jsonl, a parquet file without the column)
UNREADABLE = _Absent()  # a row that could not be read at all: its own reason says why, its id is derived


def id_text(value: Any, column: str) -> Tuple[Optional[str], Optional[str]]:
    """The row's id as text, or None and why it cannot be one."""
    if value is UNREADABLE:
        return None, None
    if value is ABSENT:
        return None, f"no '{column}' value"
    if value is None:
        return None, f"'{column}' is null"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, f"'{column}' is not UTF-8 text"
    if isinstance(value, str):
        return (value, None) if value.strip() else (None, f"'{column}' is empty")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, f"'{column}' is {type(value).__name__}, not a string or number"
    if value != value:  # NaN
        return None, f"'{column}' is NaN"
    return str(value), None


def text_problem(row: Dict[str, Any], column: str) -> Optional[str]:
    """Why the prompt cannot read this text column of the row, or None."""
    value = row.get(column, ABSENT)
    if value is ABSENT:
        return f"column '{column}' is missing"
    if value is None:
        return f"column '{column}' is null"
    if not isinstance(value, str):
        return f"column '{column}' is {type(value).__name__}, not text"
    if not value.strip():
        return f"column '{column}' is empty"
    return None


# ------------------------------------------------------------------ the scan's bookkeeping


class _PendingChunk:
    __slots__ = ("spec", "numbers", "raw_ids", "problems")

    def __init__(self, spec: Dict[str, Any]):
        self.spec = spec
        self.numbers: List[int] = []
        self.raw_ids: List[Any] = []
        self.problems: Dict[int, List[str]] = {}


class Collector:
    """Takes the rows of a scan in file order; `finish` gives every row its id."""

    def __init__(self, limit: Optional[int]):
        self.limit = limit
        self.rows = 0
        self.chunks: List[_PendingChunk] = []
        self._open: Optional[_PendingChunk] = None

    @property
    def full(self) -> bool:
        return self.limit is not None and self.rows >= self.limit

    def start(self, **spec: Any) -> None:
        self.end()
        self._open = _PendingChunk(spec)

    def add(self, number: int, raw_id: Any, problems: Sequence[str] = ()) -> None:
        chunk = self._open
        if problems:
            chunk.problems[len(chunk.numbers)] = list(problems)
        chunk.numbers.append(number)
        chunk.raw_ids.append(raw_id)
        self.rows += 1

    def open_rows(self) -> int:
        return len(self._open.numbers) if self._open else 0

    def end(self, **spec: Any) -> None:
        chunk, self._open = self._open, None
        if chunk is None:
            return
        chunk.spec.update(spec)
        if chunk.numbers:
            self.chunks.append(chunk)

    def finish(self, *, id_column: Optional[str], where: "Where", on_duplicate_id: str) -> Tuple[List[Chunk], List[BadRow], List[DuplicateId]]:
        """Ids for every row (the id column's value, or `<file>:<number>` where there is
        none), each failed row's reason, duplicates found and, if asked, renamed."""
        self.end()
        pending, self.chunks = self.chunks, []
        chunks: List[Chunk] = []
        failed: List[Tuple[int, int, int, str]] = []  # chunk, position, number, reason
        for index, part in enumerate(pending):
            relative = part.spec["relative"]
            ids, errors = [], {}
            for position, (number, raw) in enumerate(zip(part.numbers, part.raw_ids)):
                problems = part.problems.get(position, [])
                row_id = None
                if id_column is not None:
                    row_id, id_problem = id_text(raw, id_column)
                    if id_problem:
                        problems = [id_problem] + problems
                if row_id is None:
                    row_id = f"{relative}:{number}"
                if problems:
                    reason = "; ".join(problems)
                    errors[position] = f"{where(relative, number)}: {reason}"
                    failed.append((index, position, number, reason))
                ids.append(row_id)
            chunks.append(Chunk(index=index, ids=ids, errors=errors, **part.spec))
        duplicates = _duplicates(chunks, pending, on_duplicate_id)
        bad_rows = [
            BadRow(chunks[c].relative, number, chunks[c].ids[p], reason, chunks[c].errors[p]) for c, p, number, reason in failed
        ]
        return chunks, bad_rows, duplicates


def _duplicates(chunks: List[Chunk], pending: List[_PendingChunk], on_duplicate_id: str) -> List[DuplicateId]:
    """Ids that occur more than once, with where; renamed in file order when asked.

    The suffix skips any id the data already has, and depends only on the rows in file
    order, so a resumed run renames the same rows the same way."""
    places: Dict[str, List[Tuple[int, int]]] = {}
    for chunk in chunks:
        for position, row_id in enumerate(chunk.ids):
            places.setdefault(row_id, []).append((chunk.index, position))
    repeated = {row_id: spots for row_id, spots in places.items() if len(spots) > 1}
    described = [
        DuplicateId(row_id, [f"{chunks[c].relative}:{pending[c].numbers[p]}" for c, p in spots]) for row_id, spots in repeated.items()
    ]
    if on_duplicate_id != "rename":
        return described
    taken = set(places)
    for row_id, spots in repeated.items():
        suffix = 2
        for c, p in spots[1:]:
            while f"{row_id}{RENAME_SEPARATOR}{suffix}" in taken:
                suffix += 1
            new_id = f"{row_id}{RENAME_SEPARATOR}{suffix}"
            taken.add(new_id)
            chunks[c].ids[p] = new_id
            suffix += 1
    return described


class Where:
    """How a reason names a row: `data.jsonl line 17`, `part-0.parquet row 5`."""

    def __init__(self, unit: str):
        self.unit = unit

    def __call__(self, relative: str, number: int) -> str:
        return f"{relative} {self.unit} {number}"


# ------------------------------------------------------------------ readers


class Reader:
    """One source of rows over one storage Location; see runner/readers/__init__.py."""

    source = "?"
    extensions: Tuple[str, ...] = ()
    unit = "row"
    missing_fix = "give an existing file or folder"

    @property
    def file_kind(self) -> str:
        return self.source

    def __init__(
        self,
        location: Optional[Location],
        *,
        setting: str = "dataset.path",
        limit: Optional[int] = None,
        id_column: Optional[str] = None,
        on_duplicate_id: str = "fail",
        text_columns: Iterable[str] = (),
        rows_per_chunk: int = ROWS_PER_CHUNK,
        path_setting: Optional[str] = None,
    ):
        if on_duplicate_id not in ON_DUPLICATE_ID:
            raise DatasetError(f"dataset.on_duplicate_id={on_duplicate_id!r}: use one of {', '.join(ON_DUPLICATE_ID)}")
        if limit is not None and int(limit) < 1:
            raise DatasetError(f"dataset.limit={limit}: must be at least 1. Fix: dataset.limit=null for every row")
        self.location = location
        self.setting = setting  # how messages name the input, e.g. dataset.path='/data/x.jsonl'
        self.path_setting = path_setting  # dataset.path as the config gives it, for the fingerprint
        self.limit = int(limit) if limit is not None else None
        self.id_column = id_column or None
        self.on_duplicate_id = on_duplicate_id
        self.text_columns = tuple(dict.fromkeys(text_columns))
        self.rows_per_chunk = max(1, int(rows_per_chunk))
        self._listing: Optional[Tuple[List[FileEntry], List[str]]] = None

    def __getstate__(self):
        # Ray ships the reader to every read task: the listing stays on the driver.
        state = dict(self.__dict__)
        state["_listing"] = None
        return state

    @property
    def where(self) -> Where:
        return Where(self.unit)

    # -------------------------------------------------------------- files

    def _list(self) -> Tuple[List[FileEntry], List[str]]:
        if self._listing is None:
            location = self.location
            try:
                kind = location.info().type
                entries = location.list_files() if kind != pafs.FileType.NotFound else []
            except OSError as error:
                raise DatasetError(f"{self.setting}: {location} cannot be read ({type(error).__name__}: {error})") from error
            if kind == pafs.FileType.NotFound:
                raise DatasetError(f"{self.setting}: {location} does not exist. Fix: {self.missing_fix}")
            if kind == pafs.FileType.File:
                # A file named on purpose is read whatever its extension.
                self._listing = (entries, [])
            else:
                mine = [e for e in entries if self._is_mine(e.relative)]
                ignored = [e.relative for e in entries if not self._is_mine(e.relative)]
                if not mine:
                    found = f" (it holds: {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''})" if ignored else ""
                    raise DatasetError(
                        f"{self.setting}: the folder {location} holds no {self.file_kind} files ({', '.join(self.extensions)}){found}. "
                        f"Fix: point dataset.path at {self.file_kind} files, or pick the dataset option of their format"
                    )
                self._listing = (mine, ignored)
        return self._listing

    def _is_mine(self, relative: str) -> bool:
        return relative.lower().endswith(self.extensions)

    def files(self) -> List[FileEntry]:
        """The input files this reader reads, in the order rows are numbered and limited."""
        return list(self._list()[0])

    def ignored_files(self) -> List[str]:
        """Files in the input folder that are not of this format (relative paths)."""
        return list(self._list()[1])

    def fingerprint(self) -> Dict[str, Any]:
        """What identifies the input: a resume whose fingerprint differs would mix two inputs."""
        return {
            "source": self.source,
            "path": self.path_setting,
            "files": [{"path": e.relative, "size": e.size, "mtime": e.mtime} for e in self.files()],
            "limit": self.limit,
            "id_column": self.id_column,
            "on_duplicate_id": self.on_duplicate_id,
            **self._settings(),
        }

    def _settings(self) -> Dict[str, Any]:
        return {}

    def empty_error(self) -> DatasetError:
        return DatasetError(f"{self.setting}: the dataset is empty (no rows). Fix: point it at data with rows")

    def id_column_error(self, columns: Sequence[str]) -> DatasetError:
        return DatasetError(
            f"dataset.id_column={self.id_column!r} is not a column of {self.setting} (columns: {', '.join(columns)}). "
            "Fix: dataset.id_column=<a column that identifies each row>, or dataset.id_column=null to derive ids from file and line"
        )

    # -------------------------------------------------------------- per format

    def columns(self) -> List[str]:
        raise NotImplementedError

    def column_types(self) -> Dict[str, Optional[pa.DataType]]:
        raise NotImplementedError

    def head(self, n: int) -> List[Dict[str, Any]]:
        raise NotImplementedError

    def scan(self) -> Scan:
        raise NotImplementedError

    def read_chunk(self, chunk: Chunk, layout: Layout, skip: Sequence[int] = ()) -> pa.Table:
        """The chunk's rows as one table of the layout's schema, rows at `skip` positions left out."""
        raise NotImplementedError

    def _head_limit(self, n: int) -> int:
        return min(int(n), self.limit) if self.limit is not None else int(n)

    def _finish(self, collector: Collector, layout: Layout, derived_ids: bool, encoded_columns: Dict[str, List[str]]) -> Scan:
        chunks, bad_rows, duplicates = collector.finish(
            id_column=None if derived_ids else layout.id_column, where=self.where, on_duplicate_id=self.on_duplicate_id,
        )
        renaming = self.on_duplicate_id == "rename"
        rows = sum(chunk.rows for chunk in chunks)
        if not rows:
            raise self.empty_error()
        return Scan(
            source=self.source, rows=rows, chunks=chunks, layout=layout, derived_ids=derived_ids, bad_rows=bad_rows,
            duplicate_ids=[] if renaming else duplicates, renamed_ids=duplicates if renaming else [],
            on_duplicate_id=self.on_duplicate_id,
            ignored_files=self.ignored_files() if self.location is not None else [],
            encoded_columns=encoded_columns, limit=self.limit,
        )

    # -------------------------------------------------------------- Ray

    def ray_dataset(self, scan: Scan, done_ids: Iterable[str] = (), **read_kwargs: Any):
        """The rows still to run, one read task (one block) per chunk that has any.

        Each task reads its chunk through the Location's filesystem (workers of a local Ray
        inherit the driver's environment, credentials included) and leaves out the rows the
        driver found done; only the chunk and its skip list travel with the task, never the
        whole done set. `read_kwargs` go to ray.data.read_datasource (e.g. num_cpus).
        """
        import ray.data

        from runner.readers.ray_source import ChunkDatasource

        work = pending_work(scan, done_ids)
        source = ChunkDatasource(self, scan.layout, work)
        return ray.data.read_datasource(source, override_num_blocks=max(1, len(work)), **read_kwargs)


def pending_work(scan: Scan, done_ids: Iterable[str] = ()) -> List[Tuple[Chunk, List[int]]]:
    """(chunk, positions of its done rows) for every chunk with a row still to run."""
    done = done_ids if isinstance(done_ids, (set, frozenset)) else {str(i) for i in done_ids}
    work = []
    for chunk in scan.chunks:
        skip = [position for position, row_id in enumerate(chunk.ids) if row_id in done] if done else []
        if len(skip) < chunk.rows:
            work.append((chunk, skip))
    return work


def layout_schema(columns: List[Tuple[str, pa.DataType]], id_column: str) -> pa.Schema:
    """The columns with the id column as text (first if the data has none) and the error column last."""
    fields = []
    names = [name for name, _ in columns]
    if id_column not in names:
        fields.append(pa.field(id_column, pa.string()))
    for name, data_type in columns:
        if name == INPUT_ERROR_COLUMN:
            continue
        fields.append(pa.field(name, pa.string() if name == id_column else data_type))
    fields.append(pa.field(INPUT_ERROR_COLUMN, pa.string()))
    return pa.schema(fields)


def chunk_table(chunk: Chunk, layout: Layout, keep: Sequence[int], field_values) -> pa.Table:
    """A read chunk's block: ids and input errors as the scan decided them, every other
    column from `field_values(field)`, a list over the kept rows."""
    from runner.readers import values

    columns: Dict[str, List[Any]] = {}
    for column in layout.schema:
        if column.name == layout.id_column:
            columns[column.name] = [chunk.ids[p] for p in keep]
        elif column.name == INPUT_ERROR_COLUMN:
            columns[column.name] = [chunk.errors.get(p, "") for p in keep]
        else:
            columns[column.name] = field_values(column)
    return values.table(columns, layout.schema)


def keep_positions(count: int, skip: Sequence[int]) -> List[int]:
    skipped = set(skip)
    return [position for position in range(count) if position not in skipped]

