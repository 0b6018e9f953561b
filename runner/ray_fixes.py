"""A fix to Ray Data's own code, installed on the driver and in every Ray worker of a run
(runner.worker_setup, runtime_env's worker_process_setup_hook).

Ray 2.60 cannot join blocks where a nested struct field is all null in one block and a
struct in another (ray-project/ray#61656, open): `_backfill_missing_fields` iterates the
null column's type as if it were a struct and raises TypeError. The vLLM stage makes
exactly such blocks: a row the engine refuses (a prompt over the context, say) carries
`metrics: None`, a generated one a struct of timings. A batch in which every row failed,
joined with any other batch in the engine actor's output, stopped the whole run on every
resume. An all-null column holds no data to lose, so it becomes nulls of the struct type;
anything else goes to Ray's code unchanged. tests/test_ray_fixes.py says when Ray no
longer needs this.
"""

from __future__ import annotations

def install() -> None:
    import pyarrow as pa
    from ray.data._internal.arrow_ops import transform_pyarrow

    original = transform_pyarrow._backfill_missing_fields
    if getattr(original, "tolerates_null_structs", False):
        return

    def backfill_missing_fields(column, unified_struct_type, block_length):
        if pa.types.is_null(column.type) and pa.types.is_struct(unified_struct_type):
            return pa.nulls(len(column), unified_struct_type)
        return original(column, unified_struct_type, block_length)

    backfill_missing_fields.tolerates_null_structs = True
    # Ray's recursion into nested fields looks the name up in its module, so it gets this one too.
    transform_pyarrow._backfill_missing_fields = backfill_missing_fields
