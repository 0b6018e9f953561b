"""runner.ray_fixes: the blocks the vLLM stage makes when a whole batch fails join again."""

import ast
import subprocess
import sys

import pyarrow as pa

from runner import ray_fixes

# As the vLLM stage wraps its rows: a generated row has a struct of timings, a refused one None.
GENERATED = {"__data": {"id": "a", "metrics": {"arrival_time": 1.0, "num_preemptions": 0}, "__inference_error__": ""}}
REFUSED = {"__data": {"id": "b", "metrics": None, "__inference_error__": "ValueError: longer than the maximum context length"}}

JOIN = """
import pyarrow as pa
from ray.data._internal.arrow_ops import transform_pyarrow
{install}
blocks = [pa.Table.from_pylist([{generated!r}]), pa.Table.from_pylist([{refused!r}])]
print(transform_pyarrow.concat(blocks).to_pylist())
"""


def join_in_a_fresh_process(install: str) -> subprocess.CompletedProcess:
    code = JOIN.format(install=install, generated=GENERATED, refused=REFUSED)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_ray_still_needs_the_fix():
    """When this fails, Ray joins such blocks itself: drop runner/ray_fixes.py and its hook."""
    done = join_in_a_fresh_process("")
    assert done.returncode != 0 and "'pyarrow.lib.DataType' object is not iterable" in done.stderr, done.stderr[-2000:]


def test_a_batch_whose_rows_all_failed_joins_a_generated_one():
    done = join_in_a_fresh_process("from runner import ray_fixes; ray_fixes.install(); ray_fixes.install()")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = ast.literal_eval(done.stdout)
    assert [r["__data"]["id"] for r in rows] == ["a", "b"]
    assert rows[0]["__data"]["metrics"] == {"arrival_time": 1.0, "num_preemptions": 0}
    assert rows[1]["__data"]["metrics"] is None and rows[1]["__data"]["__inference_error__"].startswith("ValueError")


def test_other_mismatches_still_reach_rays_own_code():
    """Only an all-null column is filled in; a primitive where a struct is expected holds data."""
    ray_fixes.install()
    from ray.data._internal.arrow_ops import transform_pyarrow

    unified = pa.struct([("x", pa.int64())])
    filled = transform_pyarrow._backfill_missing_fields(pa.nulls(3), unified, 3)
    assert filled.type == unified and filled.null_count == 3
    try:
        transform_pyarrow._backfill_missing_fields(pa.array([1, 2]), unified, 2)
    except TypeError:
        pass
    else:
        raise AssertionError("a primitive column was passed over instead of reaching Ray's code")
