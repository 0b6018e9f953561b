"""Shared by the end-to-end tests: run `python -m runner` for real and read what it left."""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_NEWS = ROOT / "runner" / "assets" / "sample_news.jsonl"


def run_cli(cwd: Path, *overrides: str, env: dict = None, timeout: int = 900) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "runner", *overrides], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def read_results(results_dir: Path) -> List[dict]:
    import pyarrow.dataset as pds

    files = sorted(str(p) for p in results_dir.rglob("*.parquet"))
    return pds.dataset(files, format="parquet").to_table().to_pylist()


def content_words(text: str) -> set:
    return {w.lower() for w in re.findall(r"[A-Za-z]{5,}", text)}


def grep_tree(root: Path, needle: str) -> List[Path]:
    """Files under root whose bytes contain needle (SQLite stores and parquet included)."""
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def ray_sessions() -> set:
    """Ray's session folders (its own logs among them) now under its temp dir."""
    root = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
    return {p for p in root.glob("session_*") if p.is_dir() and not p.is_symlink()}
