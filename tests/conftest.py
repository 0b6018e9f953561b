import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from runner import schema

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Tests never reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
schema.register()


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def compose_cfg():
    return compose_config


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on loopback for the session (tests/s3_server.py); `with s3.environ():`
    points pyarrow, boto3 and Ray workers started inside the block at it."""
    from tests.s3_server import s3_server

    with s3_server() as server:
        yield server
