"""What runs inside the shared engine's Ray Serve replica: one row's request in, one row's
generation out, as plain dicts.

Ray Serve LLM's LLMServer runs vLLM here (start-up, health checks, shutdown) where it can
import the installed vLLM (`RowServer`); where it cannot (Ray Serve LLM 2.60 with vLLM 0.26,
the GPU machines'), the replica starts vLLM's AsyncLLM itself (`DirectRowServer`), holding
the device itself. runner.warm_engine picks which. LLMServer's own
request methods speak the OpenAI API, which does not suit a batch of rows: every caller must
import vLLM to build a ChatCompletionRequest (8-9 s per caller actor on 2 cores), answers
carry no engine timestamps (start-up and steady-state figures are read from those), and a
rejected request comes back as an ordinary answer. `generate_row` does instead what Ray Data
LLM's own stages do for a job's own engine (chat template, tokenize, generate) and answers in
the shape of its vLLM stage, so runner.results reads both alike.

The LLMServer is held, not subclassed: the driver defines the deployment from this class,
and importing LLMServer imports all of vLLM (6-7 s on 2 cores, more on a GPU host), which
the driver never does. This module imports nothing heavy until the replica starts.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, AsyncGenerator, Dict, List, Optional

from ray.llm._internal.common.callbacks.base import CallbackBase

from runner import engine_core_fork

METHOD = "generate_row"
# A request the engine refused (a prompt longer than the context, max_tokens below 1): the
# row becomes a failed row with this reason and the job goes on.
ENGINE_ERROR = "__runner_engine_error__"
# The engine timestamps runner.results measures with (vLLM's RequestStateStats).
METRIC_FIELDS = ("arrival_time", "queued_ts", "last_token_ts", "first_token_latency")
# The engine is idle when it is stopped (its jobs are done): a short grace, then vLLM kills it.
SHUTDOWN_TIMEOUT_S = 2.0


def answer(text: str = "", input_tokens: int = 0, output_tokens: int = 0, metrics: Optional[Dict[str, float]] = None,
           seconds: float = 0.0, error: str = "") -> Dict[str, Any]:
    """Every answer has the same fields and types: rows share one Arrow schema per block."""
    return {
        "generated_text": text,
        "num_input_tokens": input_tokens,
        "num_generated_tokens": output_tokens,
        # None where the engine gave no timestamps: runner.results then uses time_taken_llm.
        "metrics": {name: float(metrics[name]) for name in METRIC_FIELDS} if metrics else None,
        "time_taken_llm": seconds,
        ENGINE_ERROR: error,
    }


class SkipNodeInit(CallbackBase):
    """Ray Serve LLM starts each replica by running a task on every node of its placement
    group that "downloads" the model; it imports vLLM in a fresh process (7 s on 2 cores, on
    the start-up's critical path). A model in a local folder needs none of it: vLLM reads the
    folder. Anything else (a hub id, s3://) keeps Ray's own step."""

    async def on_before_node_init(self) -> None:
        source = self.llm_config.model_loading_config.model_source
        if isinstance(source, str) and os.path.isdir(source):
            self.ctx.run_init_node = False


class RowServer:
    async def __init__(self, llm_config: Dict[str, Any], expected_bundles: List[Dict[str, float]]):
        engine_core_fork.start()  # before vLLM's import here, so that both imports overlap
        from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
        from ray.llm._internal.serve.core.server.llm_server import LLMServer

        config = LLMConfig(**llm_config)
        _check_placement(LLMServer.get_deployment_options(config), expected_bundles)
        self._server = LLMServer.sync_init(config, engine_cls=_engine_class())
        await self._server.start()
        self._engine = self._server.engine._engine_client
        self._tokenizer = self._engine.get_tokenizer()

    async def check_health(self) -> None:
        await self._server.check_health()

    def __del__(self):
        # The engine core is a child process of this replica: end it with the replica, not
        # tens of seconds later.
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.shutdown(timeout=SHUTDOWN_TIMEOUT_S)

    def _prompt(self, request: Dict[str, Any]):
        """The engine's input as a job's own engine gets it: the text Ray Data LLM's chat
        template stage makes, tokenized by vLLM (the runner leaves its tokenize stage off)."""
        from vllm.inputs import TextPrompt

        messages = request.get("messages")
        if messages is None:
            return TextPrompt(prompt=request["prompt"])
        conversation = list(messages)
        add_generation_prompt = conversation[-1]["role"] == "user"
        text = self._tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )
        return TextPrompt(prompt=text)

    @staticmethod
    def _sampling_params(settings: Dict[str, Any]):
        import vllm

        settings = dict(settings)
        structured = settings.pop("structured_outputs", None)
        if structured:
            settings["structured_outputs"] = vllm.sampling_params.StructuredOutputsParams(**structured)
        return vllm.SamplingParams(**settings)

    async def generate_row(self, request: Dict[str, Any]) -> AsyncGenerator[Dict[str, Any], None]:
        """One answer per request (Ray Data's Serve stage calls with a streaming handle)."""
        from vllm.v1.engine.exceptions import EngineDeadError

        started = time.perf_counter()
        try:
            request = _plain(request)
            prompt = self._prompt(request)
            params = self._sampling_params(request["sampling_params"])
            final = None
            async for output in self._engine.generate(prompt, params, f"row-{uuid.uuid4().hex}"):
                final = output
        except EngineDeadError:
            raise  # the job fails; Serve's health check replaces the replica
        except Exception as error:  # noqa: BLE001 - a request the engine refused fails its row only
            yield answer(seconds=time.perf_counter() - started, error=f"{type(error).__name__}: {error}")
            return
        completion, stats = final.outputs[0], final.metrics
        yield answer(
            text=completion.text,
            input_tokens=len(final.prompt_token_ids or ()),
            output_tokens=len(completion.token_ids),
            metrics={name: getattr(stats, name) for name in METRIC_FIELDS} if stats is not None else None,
            seconds=time.perf_counter() - started,
        )


class DirectRowServer(RowServer):
    """The engine without Ray Serve LLM: vLLM's AsyncLLM, started in this replica from the
    model and the engine arguments a job's own engine gets. The replica's actor holds the
    job's GPUs (or CPUs) itself (runner.warm_engine places it); on several GPUs vLLM's own
    worker processes run the shards inside them ("mp"), not Ray's placement-group workers."""

    async def __init__(self, model_source: str, engine_kwargs: Dict[str, Any]):
        engine_core_fork.start()  # before vLLM's import here, so that both imports overlap
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.executor.abstract import Executor

        kwargs = dict(engine_kwargs)
        shards = int(kwargs.get("tensor_parallel_size") or 1) * int(kwargs.get("pipeline_parallel_size") or 1)
        if shards > 1:
            # vLLM would pick Ray's executor inside a Ray actor in a placement group.
            kwargs.setdefault("distributed_executor_backend", "mp")
        kwargs.setdefault("enable_log_requests", False)  # as Ray Serve LLM sets it
        args = AsyncEngineArgs(model=model_source, **kwargs)
        config = args.create_engine_config()
        _in_process_on_one_cpu(config)
        self._engine = AsyncLLM(
            vllm_config=config, executor_class=Executor.get_class(config),
            log_requests=args.enable_log_requests, log_stats=not args.disable_log_stats,
        )
        self._tokenizer = self._engine.get_tokenizer()

    async def check_health(self) -> None:
        await self._engine.check_health()


def _in_process_on_one_cpu(vllm_config) -> bool:
    """vLLM on CPU always runs the model in a worker process of its own beside its engine
    core ("mp"). One device needs no worker: the engine core runs the model itself ("uni"),
    as Ray Data LLM's per-job engine does; on 2 cores that spares a process that imports
    vLLM again at start-up and a hand-off between processes every step."""
    parallel = vllm_config.parallel_config
    if vllm_config.device_config.device_type == "cpu" and parallel.world_size == 1:
        parallel.distributed_executor_backend = "uni"
        return True
    return False


def _engine_class():
    """Ray Serve LLM's vLLM engine, the model run in the engine core on one CPU
    (_in_process_on_one_cpu). GPUs keep Ray's way: the replica itself holds no GPU, only the
    workers Ray places do."""
    from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine

    class InProcessEngine(VLLMEngine):
        def _prepare_engine_config(self, callback_ctx):
            engine_args, frontend_args, vllm_config = super()._prepare_engine_config(callback_ctx)
            if _in_process_on_one_cpu(vllm_config):
                engine_args.distributed_executor_backend = "uni"
            return engine_args, frontend_args, vllm_config

    return InProcessEngine


def _plain(value: Any) -> Any:
    """Lists, not the numpy arrays Ray Data's batches turn them into (vLLM wants lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return value


def _check_placement(ray_options: Dict[str, Any], expected: List[Dict[str, float]]) -> None:
    """The driver placed this replica without Ray Serve LLM's option builder (which imports
    vLLM); if Ray's own answer differs, stop here rather than run misplaced."""
    computed = ray_options.get("placement_group_bundles")
    if computed is None:
        return  # an accelerator whose placement group the engine makes itself
    def norm(bundles):
        return [{k: float(v) for k, v in b.items() if v} for b in bundles]
    if norm(computed) != norm(expected):
        raise RuntimeError(f"engine placement mismatch: Ray Serve LLM would place the replica on {computed}, the runner asked for {expected}")
