"""How many of a job's batches may wait at the engine at once.

Ray Data runs an async batch stage (the engine's, on either path: Ray Data LLM's own vLLM
stage and the shared engine's callers) with at most 4 batches of a block in flight
(`RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY`), whatever the actor's concurrency. A
read block is a whole results file (processor.rows_per_file rows), so a job of 1,000 rows is
one block, and at batch 2 on 2 cores the engine held 8 requests where it could run 32: 258
output tok/s, against 397 with 64 in flight (same rows, same engine). The engine's
scheduling, not the batch size, should set how much it holds: each job lets enough batches
of a block go out for twice engine.max_num_seqs, so the engine is full and the next
requests already wait while a batch's last row finishes; where blocks are too small for
that, the shared engine's caller works on several at once.

Ray reads the limit into the transform it plans on the driver, once per dataset, so setting
it before a job's dataset runs sets it for that job alone."""

from __future__ import annotations

import logging
import math

from runner.schema import RunConfig

log = logging.getLogger(__name__)

RAY_DEFAULT = 4
# vLLM's largest default for max_num_seqs (recent GPUs); an engine left to choose may run this many.
VLLM_LARGEST_DEFAULT_SEQS = 1024
MOST_BLOCKS_PER_CALLER = 16


def wanted_at_engine(cfg: RunConfig) -> int:
    """Twice the engine's sequences: it is full, and the next requests wait while a batch's last row finishes."""
    return 2 * (cfg.engine.max_num_seqs or VLLM_LARGEST_DEFAULT_SEQS)


def per_block(cfg: RunConfig) -> int:
    """Batches of one block in flight: enough for wanted_at_engine, never fewer than Ray's own."""
    return max(RAY_DEFAULT, math.ceil(wanted_at_engine(cfg) / max(cfg.processor.batch_size, 1)))


def requests_per_block(cfg: RunConfig) -> int:
    """The most requests one block can have at the engine at once."""
    # At least one: a batch size or file size out of range is refused by preflight, which asks this first.
    return max(1, min(per_block(cfg) * cfg.processor.batch_size, cfg.processor.rows_per_file))


def blocks_per_caller(cfg: RunConfig) -> int:
    """Blocks a caller of the shared engine works on at once: processor.max_concurrent_batches
    where it is set, else as many as small blocks (processor.rows_per_file) need to hold twice
    the engine's sequences: one at a time, 8-row blocks at batch 2 kept 8 requests at an engine
    of 32 sequences on 2 cores (219 output tok/s), eight at a time 64 (326). Each holds a
    thread of the caller's actor, hence the cap."""
    if cfg.processor.max_concurrent_batches:
        return cfg.processor.max_concurrent_batches
    return max(1, min(MOST_BLOCKS_PER_CALLER, math.ceil(wanted_at_engine(cfg) / requests_per_block(cfg))))


def requests_per_caller(cfg: RunConfig) -> int:
    """The most requests a caller of the shared engine keeps at it at once."""
    return blocks_per_caller(cfg) * requests_per_block(cfg)


def apply(cfg: RunConfig) -> None:
    """Sets the limit for the dataset this driver runs next."""
    try:
        from ray.data._internal.planner import plan_udf_map_op
    except ImportError:
        plan_udf_map_op = None
    if not hasattr(plan_udf_map_op, "DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY"):  # Ray moved it: its default stays
        log.warning("Ray Data's limit on a block's batches in flight was not found: the engine may get fewer requests than it can run")
        return
    plan_udf_map_op.DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY = per_block(cfg)
