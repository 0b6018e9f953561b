"""One Arrow type per column for data that has none (JSON lines), decided from every value
the scan saw, so that every block has the same schema.

A column whose values all share a kind keeps it (text, integer, number, boolean); integers
and floats together are numbers. Anything else (mixed kinds, nested objects or lists,
integers beyond 64 bits) is text: strings as they are, other values as JSON. A column with
only nulls is text. Without this, one `"article": 12345` among strings made Arrow refuse
the block, and the run, with 0 rows written.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Set, Tuple

import pyarrow as pa

_INT64 = (-(2**63), 2**63 - 1)


def kind(value: Any) -> str:
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return "bool"
    if isinstance(value, int):
        return "int" if _INT64[0] <= value <= _INT64[1] else "bigint"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    return type(value).__name__  # dict, list


_SINGLE = {
    frozenset({"str"}): pa.string(),
    frozenset({"int"}): pa.int64(),
    frozenset({"float"}): pa.float64(),
    frozenset({"int", "float"}): pa.float64(),
    frozenset({"bool"}): pa.bool_(),
    frozenset(): pa.string(),
}


class ColumnKinds:
    """The kinds of value seen per column, columns in the order first seen."""

    def __init__(self) -> None:
        self.kinds: Dict[str, Set[str]] = {}

    def observe(self, row: Dict[str, Any]) -> None:
        kinds = self.kinds
        for name, value in row.items():
            seen = kinds.get(name)
            if seen is None:
                seen = kinds[name] = set()
            if value is not None:
                seen.add(kind(value))

    def decide(self) -> Tuple[List[Tuple[str, pa.DataType]], Dict[str, List[str]]]:
        """(name, type) per column, and the columns written as text with the kinds seen."""
        columns, encoded = [], {}
        for name, seen in self.kinds.items():
            data_type = _SINGLE.get(frozenset(seen))
            if data_type is None:
                data_type = pa.string()
                encoded[name] = sorted(seen)
            columns.append((name, data_type))
        return columns, encoded


def as_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def converter(data_type: pa.DataType, encoded: bool):
    """How a JSON value becomes a value of the column's decided type."""
    if encoded or pa.types.is_string(data_type):
        return as_text
    if pa.types.is_floating(data_type):
        return lambda v: None if v is None else float(v)
    return lambda v: v


def table(columns: Dict[str, List[Any]], schema: pa.Schema) -> pa.Table:
    """The block; a string holding a lone surrogate (JSON allows the escape "\\ud800",
    Arrow's UTF-8 does not) is written with U+FFFD in its place instead of failing the task."""
    arrays = []
    for field in schema:
        data = columns[field.name]
        try:
            arrays.append(pa.array(data, type=field.type))
        except UnicodeEncodeError:
            arrays.append(pa.array([_clean(v) for v in data], type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value
