"""The driver builds the Ray Data LLM processor without importing vLLM (the engine actors
import it themselves), and the refusal never outlives the build."""

import subprocess
import sys
import textwrap

from tests.e2e_helpers import ROOT

PROBE = textwrap.dedent(
    """
    import sys
    from runner import models, pipeline
    from runner.config import compose, to_object

    config = to_object(compose(["ray.num_cpus=2"]))
    pipeline.start_ray(config, {})
    try:
        processor = pipeline.build_processor(config, models.locate(config.model), {}, ["id", "article", "highlights"])
        assert callable(processor)
        assert "vllm" not in sys.modules, "building the processor imported vLLM on the driver"
        import vllm.exceptions  # noqa: F401 - the refusal is gone after the build
        print("ok")
    finally:
        pipeline.stop_ray()
    """
)


def test_processor_builds_without_vllm_on_the_driver():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.strip().endswith("ok")


LENGTH_PROBE = textwrap.dedent(
    """
    import sys
    from runner import models, preflight, prompt, readers
    from runner.config import compose, to_object

    config = to_object(compose(sys.argv[1:]))
    reader = readers.for_dataset(config.dataset, text_columns=prompt.column_map(config.prompt).values())
    rows = reader.head(config.errors.length_check_rows)
    found = preflight.check_prompt_lengths(config, models.locate(config.model).source, rows)
    print("transformers" in sys.modules, found)
    """
)


def length_check(*overrides):
    done = subprocess.run([sys.executable, "-c", LENGTH_PROBE, *overrides], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout.strip().splitlines()[-1]


def test_length_check_tokenizes_only_what_a_byte_count_cannot_settle():
    # The default job's prompts clearly fit: the driver never pays for transformers.
    assert length_check() == "False None"
    # Near the limit the tokenizer decides, and names the setting that fixes it.
    loaded, _, found = length_check("engine.max_model_len=300", "prompt.max_tokens=150").partition(" ")
    assert loaded == "True" and "max_model_len" in found
