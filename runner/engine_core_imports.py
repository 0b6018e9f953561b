"""What the engine core's fork server imports ahead (runner.engine_core_fork).

A failure here must not end the server (it tolerates only ImportError): the engine core then
imports what it lacks itself, and reports the real error where vLLM would."""

import importlib

try:
    importlib.import_module("vllm.v1.engine.core")
except Exception:  # noqa: BLE001
    pass
