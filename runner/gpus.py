"""What nvidia-smi says about this machine's GPUs, without importing a CUDA framework."""

from __future__ import annotations

import shutil
import subprocess
from typing import List


def query(fields: str, units: bool = True) -> List[List[str]]:
    """One row per GPU of `nvidia-smi --query-gpu=<fields>`, its values stripped; no rows where
    there is no nvidia-smi or it fails."""
    if not shutil.which("nvidia-smi"):
        return []
    csv = "csv,noheader" if units else "csv,noheader,nounits"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", f"--format={csv}"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [[value.strip() for value in line.split(",")] for line in out.splitlines() if line.strip()]
