"""Keeping secrets out of configs, MLflow and logs.

Tokens come from the environment only. Everything we save or log passes through `redact`,
which drops secret-named keys and masks any secret value wherever it appears.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, Iterable, List

MASK = "***"
# Whole name segments, so `max_num_batched_tokens` or `max_tokens` are not secrets but
# `hf_token`, `api_key`, `aws_secret_access_key` and `db_password` are.
_SECRET_NAME = re.compile(r"(^|[_.\-])(token|key|secret|password|passwd|credentials?)($|[_.\-])", re.IGNORECASE)
_NOT_SECRET_NAME = re.compile(r"tokens$|_tokens_|^key_column$|^id_column$", re.IGNORECASE)
# Hugging Face user tokens look like hf_ followed by ~34 letters.
_TOKEN_SHAPES = [re.compile(r"hf_[A-Za-z0-9]{20,}")]
TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


def is_secret_name(name: str) -> bool:
    leaf = str(name).rsplit(".", 1)[-1]
    return bool(_SECRET_NAME.search(leaf)) and not _NOT_SECRET_NAME.search(leaf)


def secret_values(environ: Dict[str, str] = None) -> List[str]:
    """Values of secret-named environment variables, longest first (so masking is complete)."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if is_secret_name(k) and v and len(v) >= 8}
    return sorted(values, key=len, reverse=True)


def mask_text(text: str, values: Iterable[str] = None) -> str:
    for value in secret_values() if values is None else values:
        text = text.replace(value, MASK)
    for shape in _TOKEN_SHAPES:
        text = shape.sub(MASK, text)
    return text


def redact(obj: Any, values: Iterable[str] = None) -> Any:
    """A copy of a nested dict/list structure without secret-named keys or secret values."""
    values = secret_values() if values is None else list(values)
    if isinstance(obj, dict):
        return {k: redact(v, values) for k, v in obj.items() if not is_secret_name(k)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, values) for v in obj)
    if isinstance(obj, str):
        return mask_text(obj, values)
    return obj


def hub_token() -> str | None:
    for name in TOKEN_ENV_VARS:
        if os.environ.get(name):
            return os.environ[name]
    return None


class RedactingFilter(logging.Filter):
    """Masks secret values in every record that passes through a handler, tracebacks included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        # Formatters append exc_text as is and only render exc_info when exc_text is empty,
        # so the traceback is rendered here once, masked, and every handler prints that.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True


def install_log_redaction() -> None:
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
