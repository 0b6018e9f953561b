"""Side by side: plain vLLM (`LLM.generate`) and our pipeline, on the same prompts and engine settings.

    python -m runner.bench +experiment=bench_h100                      (the GPU benchmark, RESULTS.md)
    python -m runner.bench dataset=synthetic prompt=raw dataset.num_rows=8 prompt.max_tokens=16   (CPU)
    python -m runner.bench --sides pipeline +experiment=bench_h100 processor.batch_size=16
    python -m runner.bench.sweep --out outputs/bench/sweep --case "ref: processor.batch_size=16" \\
        --case "fp8: engine.quantization=fp8" -- +experiment=bench_h100

The overrides are the same config groups `python -m runner` takes. Each side runs in a fresh
process (runner.bench.plain_side, runner.bench.pipeline_side), one after the other, each with
an empty vLLM/torch compile cache of its own (`--cache cold`, the default) or with a private
copy of the one the same side left in an earlier bench's run folder (`--cache RUN_DIR`, warm
start), so neither side warms the other.

Plain side: the rows the dataset group's reader gives, turned into prompts by the prompt group
(chat prompts through the tokenizer's chat template exactly as Ray's ChatTemplateStage applies
it), then `LLM(model, **engine_kwargs)` and one `LLM.generate` call. Pipeline side:
`runner.app.run` with tracking off, as `python -m runner` runs it; the pipeline reports its own
timing marks. Figures, for both sides, measured from the moment the process is spawned:

    ready_s        spawn -> the first request reaches the engine
    generation_s   first request in -> last output out (pipeline: the last row's finished_at,
                   the engine's clock; not a file's mtime, which accounting's rewrites move)
    e2e_s          spawn -> process exit (start-up, generation, writing results, shutdown)
    req_per_s, total_tokens_per_s, output_tokens_per_s    over generation_s (steady state)
    e2e_req_per_s, e2e_output_tokens_per_s                over e2e_s

Token counts are the engine's own (prompt_token_ids, output token_ids). The result goes to
<run folder>/bench.json, to --json PATH if given, and, unless tracking is off, to one MLflow
run whose metrics are `plain.*`, `pipeline.*` and `ratio.*` (pipeline / plain).

Modules: config (compose the run's config), prompts (rows -> the plain side's requests),
plain_side and pipeline_side (the two child processes) with child (what they share), spawn
(running a side in a fresh process with its own caches), vllm_log (vLLM's own start-up
figures), results (the records, as dataclasses), figures (rates and ratios), report (tables),
mlflow_run (the bench's MLflow run, through runner.tracking), run (one side-by-side run), sweep
(several settings in a row).
"""
