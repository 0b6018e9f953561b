"""Several samples per prompt (`prompt.n`): each input row becomes n result rows, keyed by
(id, sample_index), each finished exactly once across kills like any other row.

vLLM's own `n` is not used: Ray Data LLM returns one output per row and keeps only the
first. Each sample is its own request instead, with the sample's index as its seed, so a
sample that a resume runs again draws the same text it would have drawn the first time.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Mapping, Set, Tuple

SAMPLE_COLUMN = "sample_index"
# Internal only: joins an id and a sample index into the key a run accounts by.
_KEY_SEPARATOR = "\x1f"


def key(row_id: str, sample_index: Any = None) -> str:
    return str(row_id) if sample_index is None else f"{row_id}{_KEY_SEPARATOR}{int(sample_index)}"


def keys(ids: Iterable[Any], sample_indexes: Iterable[Any] = None) -> List[str]:
    if sample_indexes is None:
        return [str(i) for i in ids]
    return [key(i, k) for i, k in zip(ids, sample_indexes)]


def shown(row_key: str) -> str:
    """A key as a person reads it: `id` or `id (sample k)`."""
    row_id, _, index = row_key.partition(_KEY_SEPARATOR)
    return f"{row_id} (sample {index})" if index else row_id


def split_done(done_keys: Set[str], n: int) -> Tuple[Set[str], Dict[str, Set[int]]]:
    """(ids whose every sample is done, {id: done sample indexes} for ids done in part)."""
    if n == 1:
        return set(done_keys), {}
    found: Dict[str, Set[int]] = {}
    for row_key in done_keys:
        row_id, _, index = row_key.partition(_KEY_SEPARATOR)
        if index:
            found.setdefault(row_id, set()).add(int(index))
    complete = {row_id for row_id, indexes in found.items() if len(indexes) >= n}
    return complete, {row_id: indexes for row_id, indexes in found.items() if row_id not in complete}


def expand(row: Mapping[str, Any], n: int, id_column: str, partial: Mapping[str, Set[int]]) -> Iterator[Dict[str, Any]]:
    """The row once per sample still to run (flat_map)."""
    done = partial.get(str(row[id_column]), ())
    for index in range(n):
        if index not in done:
            yield {**row, SAMPLE_COLUMN: index}
