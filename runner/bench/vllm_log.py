"""vLLM's own start-up figures, read from a side's log: what each part of getting the engine
ready took, and when (seconds after the side was spawned) each step happened."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Dict, Optional

DURATIONS = {
    "weights_load_s": re.compile(r"Loading weights took ([\d.]+) seconds|Model loading took [\d.]+ ?GiB(?: memory)? and ([\d.]+) seconds"),
    "dynamo_s": re.compile(r"Dynamo bytecode transform time: ([\d.]+) s"),
    "compile_s": re.compile(r"torch\.compile takes ([\d.]+) s in total|torch\.compile took ([\d.]+) s in total"),
    "graph_capture_s": re.compile(r"Graph capturing finished in ([\d.]+) secs"),
    "engine_init_s": re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"),
}
_VLLM_TIME = re.compile(r"(?:INFO|WARNING|DEBUG) (\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))?")
# Events, in start-up order; each is timed by the vLLM timestamp of the first line matching it.
EVENTS = {
    # vLLM imported: by the plain process, or (pipeline) by the Ray actor that holds the engine.
    "vllm_imported": re.compile(r"^(?!.*vLLMEngineStageUDF).*(?:INFO|WARNING) \d\d-\d\d "),
    "actor_vllm_imported": re.compile(r"vLLMEngineStageUDF.*(?:INFO|WARNING) \d\d-\d\d "),
    # Inside a Ray actor vLLM must spawn (not fork) its engine-core process, which re-imports vLLM.
    "engine_core_spawn_forced": re.compile(r"must use the `spawn` multiprocessing start method"),
    "engine_core_start": re.compile(r"Initializing a V\d LLM engine"),
    "weights_loaded": DURATIONS["weights_load_s"],
    "engine_init_done": DURATIONS["engine_init_s"],
}


def log_figures(text: str, spawned: float) -> Dict[str, float]:
    """Durations vLLM reports while starting, and `at_<event>_s`: when each event happened."""
    found: Dict[str, float] = {}
    year = datetime.fromtimestamp(spawned).year
    for line in text.splitlines():
        for name, pattern in DURATIONS.items():
            match = pattern.search(line)
            if match and name not in found:
                found[name] = float(next(g for g in match.groups() if g is not None))
        for name, pattern in EVENTS.items():
            key = f"at_{name}_s"
            if key in found or not pattern.search(line):
                continue
            when = _line_time(line, year)
            if when is not None:
                found[key] = when - spawned
    return found


def _line_time(line: str, year: int) -> Optional[float]:
    """The epoch time of a vLLM log line, whose stamp has no year."""
    stamp = _VLLM_TIME.search(line)
    if not stamp:
        return None
    month, day, hour, minute, second, frac = stamp.groups()
    when = datetime(year, int(month), int(day), int(hour), int(minute), int(second)).timestamp()
    return when + (float("0." + frac) if frac else 0.0)
