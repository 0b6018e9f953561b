"""The Ray Data source over a scan's chunks: one read task per chunk.

A Datasource (not from_items + map) keeps the plan starting with a Read, which is what
Ray Data's own checkpointing wraps, and each task carries only its chunk and skip list.
"""

from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask


def _read(reader, chunk, layout, skip):
    return [reader.read_chunk(chunk, layout, skip)]


class ChunkDatasource(Datasource):
    def __init__(self, reader, layout, work: List[Tuple[object, Sequence[int]]]):
        super().__init__()
        self._reader = reader
        self._layout = layout
        self._work = work

    def get_name(self) -> str:
        return f"Read{self._reader.source.capitalize()}"

    def estimate_inmemory_data_size(self) -> Optional[int]:
        return sum(chunk.size for chunk, _ in self._work) or None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: Optional[int] = None, data_context=None) -> List[ReadTask]:
        tasks = []
        for chunk, skip in self._work:
            metadata = BlockMetadata(
                num_rows=chunk.rows - len(skip), size_bytes=chunk.size or None,
                input_files=[chunk.path] if chunk.path else None, exec_stats=None,
            )
            read = functools.partial(_read, self._reader, chunk, self._layout, list(skip))
            tasks.append(ReadTask(read, metadata, schema=self._layout.schema, per_task_row_limit=per_task_row_limit))
        return tasks
