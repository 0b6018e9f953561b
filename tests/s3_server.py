"""A real S3-compatible server on loopback for tests: `moto_server`, one process per session.

moto's in-process mock patches boto only; pyarrow's S3 client (C++) and Ray's workers need a
server they can reach over HTTP, so the tests start moto's own server. moto[server] 5.2.5:
5.2.1 answers pyarrow's multipart uploads wrongly.

    with s3_server() as server:
        server.create_bucket("inputs")
        with server.environ():          # AWS_* in os.environ: pyarrow, boto3 and Ray workers see it
            storage.resolve("s3://inputs/data.jsonl")

The pytest fixture `s3` (tests/conftest.py) is this server, started once per session.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator

START_TIMEOUT_S = 30.0
# S3's own rule (3-63 chars of lower-case letters, digits, dots and hyphens); moto accepts
# some names AWS refuses, and a test should fail here, not against a real bucket.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    port: int
    pid: int
    log_path: Path
    env: Dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.contextmanager
    def environ(self, **overrides: str) -> Iterator[Dict[str, str]]:
        """The server's AWS_* settings (with `overrides`) in os.environ for the block, the previous values after."""
        env = {**self.env, **overrides}
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: str) -> str:
        """Create the bucket (if new); returns its s3:// URI."""
        if not BUCKET_NAME.match(name):
            raise ValueError(f"bucket name {name!r}: S3 wants 3-63 lower-case letters, digits, '.' or '-' (no '_')")
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return f"s3://{name}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except (urllib.error.URLError, OSError):
        return False


def _moto_command(port: int):
    exe = shutil.which("moto_server")
    if exe:
        return [exe, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="moto-"))
    log_path = log_dir / "moto_server.log"
    with open(log_path, "wb") as log:
        # Its own session, so a Ctrl-C aimed at pytest does not kill it before the tests' clean-up.
        proc = subprocess.Popen(_moto_command(port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    server = S3Server(port=port, pid=proc.pid, log_path=log_path, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(server.endpoint):
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not answer on port {port} within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.1)
        yield server
    finally:
        _stop(proc)
        shutil.rmtree(log_dir, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
