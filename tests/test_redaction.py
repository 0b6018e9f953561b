import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import pytest

from runner import redaction
from tests.e2e_helpers import ROOT, grep_tree, ray_sessions


@pytest.mark.parametrize("name", ["hf_token", "HF_TOKEN", "api_key", "aws_secret_access_key", "db_password", "tracking.token"])
def test_secret_names(name):
    assert redaction.is_secret_name(name)


@pytest.mark.parametrize("name", ["max_tokens", "max_num_batched_tokens", "num_input_tokens", "id_column", "tokenize_stage", "monkey"])
def test_ordinary_names(name):
    assert not redaction.is_secret_name(name)


def test_redact_drops_secret_keys_and_masks_values():
    planted = "hf_" + "Q" * 34
    tree = {"engine": {"max_num_batched_tokens": 2048}, "hf_token": planted, "notes": [f"token is {planted}"]}
    clean = redaction.redact(tree, values=[planted])
    assert clean == {"engine": {"max_num_batched_tokens": 2048}, "notes": ["token is ***"]}


def test_log_records_are_masked(monkeypatch, caplog):
    monkeypatch.setenv("HF_TOKEN", "secret-value-12345")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "using %s", ("secret-value-12345",), None)
    assert redaction.RedactingFilter().filter(record)
    assert record.getMessage() == "using ***"


def test_a_logged_traceback_is_masked(monkeypatch):
    """Seen: a traceback raised by ray.init wrote the token unmasked into the run's log."""
    monkeypatch.setenv("HF_TOKEN", "hf_TracebackPlanted0123456789abcdefgh")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMIK7MDENGbPxRfiCYPLANTED42")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(redaction.RedactingFilter())
    log = logging.getLogger("test_a_logged_traceback_is_masked")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise RuntimeError(f"env was {dict(os.environ)}")
        except RuntimeError:
            log.exception("ray.init failed")
        log.error("again", exc_info=(RuntimeError, RuntimeError("key wJalrXUtnFEMIK7MDENGbPxRfiCYPLANTED42"), None))
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text and "RuntimeError: env was" in text and "RuntimeError: key ***" in text
    assert "hf_TracebackPlanted" not in text and "wJalrXUtnFEMIK7MDENGbPxRfiCYPLANTED42" not in text
    stacked = logging.LogRecord("x", logging.INFO, __file__, 1, "here", None, None, sinfo='  File "x.py", line 1, in <module>\n    login("wJalrXUtnFEMIK7MDENGbPxRfiCYPLANTED42")')
    assert redaction.RedactingFilter().filter(stacked) and "PLANTED42" not in stacked.stack_info and "login(\"***\")" in stacked.stack_info


def test_worker_env_carries_settings_but_no_secret():
    from runner import pipeline
    from runner.config import compose, to_object

    cfg = to_object(compose(["+hw.env.MY_API_KEY=abc", "+hw.env.OMP_NUM_THREADS=2"]))
    assert pipeline.worker_env(cfg, "hf_" + "Q" * 34) == {"VLLM_CPU_KVCACHE_SPACE": "2", "OMP_NUM_THREADS": "2"}


INHERITANCE_PROBE = textwrap.dedent(
    """
    import json, os, sys
    import ray
    from runner import pipeline, redaction
    from runner.config import compose, to_object

    config = to_object(compose(["ray.num_cpus=2"]))
    env = pipeline.worker_env(config, redaction.hub_token())
    pipeline.start_ray(config, env)
    try:
        # Like the engine actors: their own runtime_env with the hw settings on top.
        @ray.remote(num_cpus=0.1, runtime_env={"env_vars": env})
        class Probe:
            def env(self):
                names = ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "VLLM_CPU_KVCACHE_SPACE")
                return {name: os.environ.get(name) for name in names}

        print(json.dumps(ray.get(Probe.remote().env.remote())))
    finally:
        pipeline.stop_ray()
    """
)


@pytest.mark.slow
def test_a_local_rays_workers_inherit_secrets_that_never_reach_rays_logs():
    """Secrets reach the workers by inheritance, not runtime_env, which Ray logs in full."""
    secrets = {"HF_TOKEN": "hf_InheritedPlanted0123456789abcdefgh", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPxRfiCYPLANTED42"}
    before = ray_sessions()
    done = subprocess.run(
        [sys.executable, "-c", INHERITANCE_PROBE], capture_output=True, text=True, timeout=300,
        env={**os.environ, **secrets, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {**secrets, "VLLM_CPU_KVCACHE_SPACE": "2"}
    sessions = ray_sessions() - before
    assert sessions, "the probe started no Ray session under /tmp/ray"
    for session in sessions:
        assert (session / "logs").is_dir()
        for secret in secrets.values():
            assert grep_tree(session, secret) == []
