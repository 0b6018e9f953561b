"""The code's shape, checked on every run: no function in runner/ over cyclomatic complexity 15
(ruff's C901), and the tools' modules small."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_COMPLEXITY = 15
TOOL_PACKAGES = ("bench", "compare")
MAX_TOOL_MODULE_LINES = 250


def complexity_check(*paths):
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "C901", "--config", f"lint.mccabe.max-complexity={MAX_COMPLEXITY}", *map(str, paths)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def test_no_function_in_runner_is_over_complexity_15():
    done = complexity_check(ROOT / "runner")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_complexity_check_catches_a_function_over_15(tmp_path):
    branches = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(MAX_COMPLEXITY))
    (tmp_path / "tangled.py").write_text(f"def tangled(x):\n{branches}    return -1\n")
    done = complexity_check(tmp_path / "tangled.py")
    assert done.returncode == 1 and "`tangled` is too complex (16 > 15)" in done.stdout, done.stdout + done.stderr


def test_the_tools_modules_are_small():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for name in TOOL_PACKAGES for p in (ROOT / "runner" / name).glob("*.py")}
    assert len(sizes) > 10
    assert {path: n for path, n in sizes.items() if n > MAX_TOOL_MODULE_LINES} == {}
