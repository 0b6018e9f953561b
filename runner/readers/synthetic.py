"""Generated rows (`id`, `prompt` of N short words): fixed work for benchmarks, no files."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import pyarrow as pa

from runner.readers.base import BadRow, DEFAULT_ID_COLUMN, INPUT_ERROR_COLUMN, Chunk, DatasetError, Layout, Reader, Scan, keep_positions

COLUMNS = ["id", "prompt"]
SCHEMA = pa.schema([("id", pa.string()), ("prompt", pa.string()), (INPUT_ERROR_COLUMN, pa.string())])


def synthetic_row(index: int, words: int) -> Dict[str, str]:
    # One short common word is one token in every tokenizer we use, so a prompt of N words
    # is close to N tokens; the engine's own count is what gets reported.
    return {"id": f"synthetic-{index:08d}", "prompt": " ".join(["hello"] * words) + f" {index}"}


class SyntheticReader(Reader):
    source = "synthetic"

    def __init__(self, num_rows: int, input_tokens: int, **settings: Any):
        super().__init__(None, setting="dataset=synthetic", **settings)
        if int(num_rows) < 1:
            raise DatasetError(f"dataset.num_rows={num_rows}: must be at least 1")
        if int(input_tokens) < 1:
            raise DatasetError(f"dataset.input_tokens={input_tokens}: must be at least 1")
        if self.id_column not in (None, DEFAULT_ID_COLUMN):
            raise self.id_column_error(COLUMNS)
        self.num_rows = int(num_rows)
        self.input_tokens = int(input_tokens)

    @property
    def total(self) -> int:
        return min(self.num_rows, self.limit) if self.limit is not None else self.num_rows

    def files(self):
        return []

    def ignored_files(self) -> List[str]:
        return []

    def _settings(self) -> Dict[str, Any]:
        return {"num_rows": self.num_rows, "input_tokens": self.input_tokens}

    def columns(self) -> List[str]:
        return list(COLUMNS)

    def column_types(self) -> Dict[str, Optional[pa.DataType]]:
        return {name: pa.string() for name in COLUMNS}

    def head(self, n: int) -> List[Dict[str, Any]]:
        return [synthetic_row(i, self.input_tokens) for i in range(min(int(n), self.total))]

    def scan(self) -> Scan:
        missing = [c for c in self.text_columns if c not in COLUMNS]
        reason = "; ".join(f"column '{c}' is missing" for c in missing)
        chunks, bad_rows = [], []
        for start in range(0, self.total, self.rows_per_chunk):
            stop = min(start + self.rows_per_chunk, self.total)
            ids = [synthetic_row(i, 0)["id"] for i in range(start, stop)]
            errors = {p: f"synthetic row {start + p}: {reason}" for p in range(len(ids))} if reason else {}
            bad_rows += [BadRow("", start + p, ids[p], reason, message) for p, message in errors.items()]
            chunks.append(Chunk(index=len(chunks), relative="", path="", first=start, ids=ids, errors=errors, size=len(ids) * self.input_tokens * 6))
        return Scan(
            source=self.source, rows=self.total, chunks=chunks, layout=Layout(SCHEMA, DEFAULT_ID_COLUMN), derived_ids=False,
            bad_rows=bad_rows, duplicate_ids=[], renamed_ids=[], on_duplicate_id=self.on_duplicate_id, ignored_files=[], encoded_columns={},
            limit=self.limit,
        )

    def read_chunk(self, chunk: Chunk, layout: Layout, skip: Sequence[int] = ()) -> pa.Table:
        keep = keep_positions(chunk.rows, skip)
        rows = [synthetic_row(chunk.first + p, self.input_tokens) for p in keep]
        return pa.table(
            {"id": [r["id"] for r in rows], "prompt": [r["prompt"] for r in rows], INPUT_ERROR_COLUMN: [chunk.errors.get(p, "") for p in keep]},
            schema=SCHEMA,
        )
