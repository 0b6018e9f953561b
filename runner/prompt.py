"""Prompt building: one dataset row -> chat messages (or a raw prompt) + sampling parameters.

Pure functions of the row and the prompt config, so they are tested without Ray or a model.
"""

from __future__ import annotations

import string
from typing import Any, Dict, List, Mapping

from runner import structured
from runner.errors import RunnerError
from runner.schema import PromptConfig


def placeholders(template: str) -> List[str]:
    """The {names} a format string reads, in order, without repeats."""
    names: List[str] = []
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is None:
            continue
        if not field_name.isidentifier():
            raise ValueError(
                f"prompt.user: placeholder {{{field_name}}} is not a plain name; "
                "use {column_name} and map it with prompt.columns"
            )
        if field_name not in names:
            names.append(field_name)
    return names


def column_map(prompt_cfg: PromptConfig) -> Dict[str, str]:
    """Placeholder -> dataset column; a placeholder not mapped reads the column of its name."""
    mapping = dict(prompt_cfg.columns or {})
    return {name: mapping.get(name, name) for name in placeholders(prompt_cfg.user)}


def sampling_params(prompt_cfg: PromptConfig) -> Dict[str, Any]:
    params = {
        "temperature": prompt_cfg.temperature,
        "top_p": prompt_cfg.top_p,
        "max_tokens": prompt_cfg.max_tokens,
        "ignore_eos": prompt_cfg.ignore_eos,
    }
    constraint = structured.engine_param(prompt_cfg)
    if constraint is not None:
        params["structured_outputs"] = constraint
    return params


class PromptInputError(RunnerError, ValueError):
    """A row cannot be turned into a prompt (missing, non-text or empty field)."""


def user_text(row: Mapping[str, Any], columns: Mapping[str, str], template: str) -> str:
    values = {}
    for name, column in columns.items():
        if column not in row:
            raise PromptInputError(f"column '{column}' (prompt placeholder {{{name}}}) is missing from the row")
        value = row[column]
        if not isinstance(value, str):
            raise PromptInputError(
                f"column '{column}' (prompt placeholder {{{name}}}) is {type(value).__name__}, not text"
            )
        if not value.strip():
            # A model asked about nothing still answers; the row would look done but hold a made-up text.
            raise PromptInputError(f"column '{column}' (prompt placeholder {{{name}}}) is empty")
        values[name] = value
    return template.format(**values)


def build_request(row: Mapping[str, Any], prompt_cfg: PromptConfig, columns: Mapping[str, str]) -> Dict[str, Any]:
    """The engine request fields for one row: `messages` (chat) or `prompt` (raw) + `sampling_params`."""
    text = user_text(row, columns, prompt_cfg.user)
    request: Dict[str, Any] = {"sampling_params": sampling_params(prompt_cfg)}
    if prompt_cfg.chat_template:
        messages = []
        if prompt_cfg.system:
            messages.append({"role": "system", "content": prompt_cfg.system})
        messages.append({"role": "user", "content": text})
        request["messages"] = messages
    else:
        request["prompt"] = text
    return request
