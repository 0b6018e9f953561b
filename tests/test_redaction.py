import logging

import pytest

from runner import redaction


@pytest.mark.parametrize("name", ["hf_token", "HF_TOKEN", "api_key", "aws_secret_access_key", "db_password", "tracking.token"])
def test_secret_names(name):
    assert redaction.is_secret_name(name)


@pytest.mark.parametrize("name", ["max_tokens", "max_num_batched_tokens", "num_input_tokens", "id_column", "tokenize_stage", "monkey"])
def test_ordinary_names(name):
    assert not redaction.is_secret_name(name)


def test_redact_drops_secret_keys_and_masks_values():
    planted = "hf_" + "Q" * 34
    tree = {"engine": {"max_num_batched_tokens": 2048}, "hf_token": planted, "notes": [f"token is {planted}"]}
    clean = redaction.redact(tree, values=[planted])
    assert clean == {"engine": {"max_num_batched_tokens": 2048}, "notes": ["token is ***"]}


def test_log_records_are_masked(monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", "secret-value-12345")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "using %s", ("secret-value-12345",), None)
    assert redaction.RedactingFilter().filter(record)
    assert record.getMessage() == "using ***"
