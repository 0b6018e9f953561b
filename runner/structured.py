"""Structured output: a JSON schema (`prompt.json_schema`) or a fixed list of labels
(`prompt.choices`) that the engine's decoding is held to, and the check of what came back.

The engine constrains decoding, but an output can still come back unusable: cut by
`max_tokens` in the middle of a string or an array (an unbounded schema let SmolLM2 loop inside
an array until the limit on 5 rows of 8). So every output is parsed and validated again here,
and one that fails is a failed row with the reason, never a silent null.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

from runner.errors import RunnerError
from runner.schema import PromptConfig

LABEL_COLUMN = "label"
# JSON schema scalar types -> the result column's Arrow type (by name, so that this module
# does not import pyarrow for the prompt builder).
SCALAR_TYPES = {"string": "string", "integer": "int64", "number": "float64", "boolean": "bool"}
# Any other field (an object, an array of objects, a union) is kept as its JSON text.
JSON_TEXT = "json"


class StructuredConfigError(RunnerError, ValueError):
    """prompt.json_schema or prompt.choices cannot be used; the message names the key and the fix."""


def load_schema(value: Any) -> Dict[str, Any]:
    """prompt.json_schema as a dict: an inline mapping, or a path to a .json file."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        return _schema_file(str(Path(value).expanduser().resolve()))
    raise StructuredConfigError(
        f"prompt.json_schema is a {type(value).__name__}. Fix: give a mapping (inline JSON schema) or the path of a .json file"
    )


@functools.lru_cache(maxsize=8)
def _schema_file(path: str) -> Dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise StructuredConfigError(
            f"prompt.json_schema={path}: cannot read it ({error.strerror}). Fix: give an existing .json file "
            "(absolute, or relative to the directory the runner starts in) or an inline mapping"
        ) from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as error:
        raise StructuredConfigError(f"prompt.json_schema={path} is not JSON ({error}). Fix the file") from None
    if not isinstance(schema, dict):
        raise StructuredConfigError(f"prompt.json_schema={path} holds a {type(schema).__name__}, not a JSON schema object")
    return schema


def _column_type(prop: Mapping[str, Any]) -> str:
    """Arrow type name of a top-level field's column: a scalar, a list of scalars, or JSON text."""
    kind = prop.get("type")
    if isinstance(kind, list):
        others = [k for k in kind if k != "null"]
        kind = others[0] if len(others) == 1 else None
    if kind is None and "enum" in prop and all(isinstance(v, str) for v in prop["enum"]):
        kind = "string"
    if kind in SCALAR_TYPES:
        return SCALAR_TYPES[kind]
    if kind == "array" and isinstance(prop.get("items"), Mapping):
        item = _column_type(prop["items"])
        if item in SCALAR_TYPES.values():
            return f"list<{item}>"
    return JSON_TEXT


@dataclass(frozen=True)
class Spec:
    """What the engine is held to, and the result columns it adds (name -> Arrow type name)."""

    schema: Optional[Dict[str, Any]] = None
    schema_text: str = ""
    choices: Optional[Tuple[str, ...]] = None
    columns: Dict[str, str] = field(default_factory=dict)


def engine_param(prompt_cfg: PromptConfig) -> Optional[Dict[str, Any]]:
    """vLLM's StructuredOutputsParams fields, as Ray Data LLM reads them from
    `sampling_params["structured_outputs"]`; None for free text. Built for every row, so it
    only reads the config: spec() checks it, once, before the run.

    The schema goes as JSON text: rows share one Arrow schema per block, and a schema as a
    nested mapping would become a struct whose shape (unions, enums, nested items) Arrow may
    not hold."""
    if prompt_cfg.choices is not None:
        return {"choice": [str(c) for c in prompt_cfg.choices]}
    if prompt_cfg.json_schema is not None:
        return {"json": json.dumps(load_schema(prompt_cfg.json_schema))}
    return None


def resolved(prompt_cfg: PromptConfig) -> PromptConfig:
    """The prompt config with a schema file read into a mapping: the engine workers do not run
    in the directory a relative path was given from."""
    if isinstance(prompt_cfg.json_schema, str):
        return dataclasses.replace(prompt_cfg, json_schema=load_schema(prompt_cfg.json_schema))
    return prompt_cfg


def spec(prompt_cfg: PromptConfig) -> Optional[Spec]:
    """The prompt's structured-output spec, or None for free text. Raises StructuredConfigError."""
    schema_value, choices = prompt_cfg.json_schema, prompt_cfg.choices
    if schema_value is not None and choices is not None:
        raise StructuredConfigError("prompt.json_schema and prompt.choices are both set. Fix: keep one (e.g. prompt.choices=null)")
    if choices is not None:
        labels = list(choices)
        if not labels or not all(isinstance(c, str) and c.strip() for c in labels) or len(set(labels)) != len(labels):
            raise StructuredConfigError(
                f"prompt.choices={labels!r}: give a list of distinct, non-empty labels, e.g. prompt.choices=[politics,sport]"
            )
        return Spec(choices=tuple(labels), columns={LABEL_COLUMN: "string"})
    if schema_value is None:
        return None
    schema = load_schema(schema_value)
    _check_schema(schema)
    columns = {name: _column_type(prop) for name, prop in schema["properties"].items()}
    return Spec(schema=schema, schema_text=json.dumps(schema), columns=columns)


def _check_schema(schema: Dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator, SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        raise StructuredConfigError(f"prompt.json_schema is not a valid JSON schema at {where}: {error.message}") from None
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), Mapping) or not schema["properties"]:
        raise StructuredConfigError(
            "prompt.json_schema must describe an object with properties (type: object, properties: {...}): "
            "each top-level field becomes a result column. Fix: wrap other shapes in an object field"
        )


@functools.lru_cache(maxsize=8)
def _validator(schema_text: str):
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(schema_text))


def _cut_hint(num_generated_tokens: int, max_tokens: int) -> str:
    if max_tokens and num_generated_tokens >= max_tokens:
        return (f"; it used all prompt.max_tokens={max_tokens} tokens (cut off). Fix: raise prompt.max_tokens "
                "or bound the schema (maxLength, maxItems)")
    return ""


def parse(spec: Spec, text: str, num_generated_tokens: int = 0, max_tokens: int = 0) -> Tuple[Dict[str, Any], str]:
    """(column values, error). On error every column is None, so failed rows keep the columns."""
    empty = {name: None for name in spec.columns}
    if spec.choices is not None:
        label = (text or "").strip()
        if label not in spec.choices:
            return empty, f"output {label[:80]!r} is not one of prompt.choices" + _cut_hint(num_generated_tokens, max_tokens)
        return {LABEL_COLUMN: label}, ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return empty, f"output is not valid JSON ({error.msg} at char {error.pos})" + _cut_hint(num_generated_tokens, max_tokens)
    problems = sorted(_validator(spec.schema_text).iter_errors(value), key=lambda e: list(e.absolute_path))
    if problems:
        first = problems[0]
        where = "/".join(str(p) for p in first.absolute_path) or "top level"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return empty, f"output does not match prompt.json_schema at {where}: {first.message[:200]}{more}"
    return {name: _cell(value.get(name), kind) for name, kind in spec.columns.items()}, ""


def _cell(value: Any, kind: str) -> Any:
    """A validated field's value in its column's type (JSON numbers may come as 3 for 3.0)."""
    if value is None:
        return None
    if kind == JSON_TEXT:
        return json.dumps(value, ensure_ascii=False)
    if kind == "float64":
        return float(value)
    if kind == "int64":
        return int(value)
    return value
