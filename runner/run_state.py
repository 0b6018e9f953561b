"""A run's own state, kept where the run lives (local folder or object storage), never in memory.

`manifest.json` says what the run is (config and input fingerprints), whether it finished,
and its counts. Which rows are done is never recorded apart from the rows themselves: it is
read from the readable files in results/ and failed/, so a lost checkpoint or a kill at
any moment cannot make a row run twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set

from runner import result_files
from runner.errors import RunnerError
from runner.storage import Location
from runner.tracking import flatten

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
METRICS = "metrics.json"
RESULTS = "results"
FAILED = "failed"
# Files a killed writer left unreadable are moved here, not deleted; the leading underscore
# keeps every reader away from them.
UNREADABLE = "_unreadable"
RUNNING, FINISHED = "running", "finished"

# Settings that decide which rows run and what they produce. A resume that changes any of
# them would mix two runs in one result set, so it is refused even with --force. Everything
# else (where Ray runs, batch sizes, tracking, prices) changes how fast, not what.
OUTPUT_DEFINING = ("model.", "engine.", "dataset.", "prompt.", "output.format", "errors.on_row_error")
# Engine settings that size and schedule the work but leave each request as it was.
SCHEDULING_ONLY = (
    "engine.gpu_memory_utilization", "engine.max_num_seqs", "engine.max_num_batched_tokens",
    "engine.enforce_eager", "engine.enable_chunked_prefill", "engine.enable_prefix_caching",
)


class ResumeError(RunnerError):
    """A run that cannot be resumed as asked; the message says why and what to do."""


@dataclass
class Manifest:
    config: Dict[str, Any]
    input: Dict[str, Any]
    id_column: str
    status: str = RUNNING
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    # One entry per time the pipeline started: when, how many rows it had to run, and
    # when it ended (absent for an attempt that was killed).
    attempts: List[Dict[str, Any]] = field(default_factory=list)
    counts: Optional[Dict[str, int]] = None
    version: int = 1

    @property
    def config_fingerprint(self) -> str:
        return fingerprint(self.config)

    @property
    def input_fingerprint(self) -> str:
        return fingerprint(self.input)

    def to_json(self) -> str:
        payload = asdict(self)
        payload["config_fingerprint"] = self.config_fingerprint
        payload["input_fingerprint"] = self.input_fingerprint
        return json.dumps(payload, indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        payload = json.loads(text)
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in payload.items() if k in names})


def fingerprint(obj: Any) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def load(run: Location) -> Optional[Manifest]:
    target = run.child(MANIFEST)
    if not target.exists():
        return None
    return Manifest.from_json(target.read_text())


def save(run: Location, manifest: Manifest) -> None:
    manifest.updated_at = time.time()
    run.child(MANIFEST).write_text(manifest.to_json())


def config_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> List[str]:
    """Keys whose values differ, as `key: old -> new`."""
    old, new = flatten(before), flatten(after)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _defines_output(change: str) -> bool:
    key = change.split(":", 1)[0]
    if key in SCHEDULING_ONLY:
        return False
    return any(key == p or key.startswith(p) for p in OUTPUT_DEFINING)


def input_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> List[str]:
    """What differs between two input fingerprints, file by file where the reader lists files."""
    changes = []
    old_files = {f["path"]: f for f in before.get("files", [])}
    new_files = {f["path"]: f for f in after.get("files", [])}
    for path in sorted(set(old_files) | set(new_files)):
        if path not in new_files:
            changes.append(f"{path} is gone")
        elif path not in old_files:
            changes.append(f"{path} is new")
        elif old_files[path] != new_files[path]:
            was, now = old_files[path], new_files[path]
            changes.append(f"{path} changed (size {was.get('size')} -> {now.get('size')}, mtime {was.get('mtime')} -> {now.get('mtime')})")
    rest_before = {k: v for k, v in before.items() if k != "files"}
    rest_after = {k: v for k, v in after.items() if k != "files"}
    changes += [f"dataset {c}" for c in config_changes(rest_before, rest_after)]
    return changes


def check_resumable(manifest: Manifest, config: Mapping[str, Any], input_fp: Mapping[str, Any], force: bool, where: str) -> List[str]:
    """Refuse a resume whose config or input changed since the run started; return the
    accepted config changes (only with force, only those that cannot alter outputs)."""
    changed_input = input_changes(manifest.input, input_fp)
    if changed_input:
        raise ResumeError(
            f"the input of {where} changed since the run started, so finished rows would no longer match it: "
            + "; ".join(changed_input[:10])
            + ". Fix: restore the input, or start a new run on the new input"
        )
    changes = config_changes(_as_read_now(manifest.config), _as_read_now(config))
    if not changes:
        return []
    defining = [c for c in changes if _defines_output(c)]
    if defining:
        raise ResumeError(
            f"the config of {where} changed since the run started in settings that decide its outputs: "
            + "; ".join(defining)
            + f". Fix: undo the change in {where}/{CONFIG} (the run's manifest.json holds the original), or start a new run"
        )
    if not force:
        raise ResumeError(
            f"the config of {where} changed since the run started: " + "; ".join(changes)
            + ". These settings do not change what a row produces; resume with --force to accept them"
        )
    return changes


def _as_read_now(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A config as this runner reads it: a setting the schema gained since a run started is at
    its default (the behaviour the run had) on both sides, not a change to refuse."""
    from omegaconf.errors import OmegaConfBaseException

    from runner import config as run_config

    try:
        return run_config.to_dict(run_config.typed(config))
    except (run_config.ConfigError, OmegaConfBaseException):  # e.g. a key this runner no longer knows: reported as a change
        return config


def finished_ids(run: Location, id_column: str) -> Set[str]:
    """Keys (ids, or id and sample index) of every row in a readable results/ or failed/
    file: the rows a resume must skip.

    A file a killed writer left half-written cannot be read, and none of its rows count as
    done; it is moved to results/_unreadable/ (never deleted), and its rows run again.
    """
    done: Set[str] = set()
    for folder in (run.child(RESULTS), run.child(FAILED)):
        for entry in folder.list_files():
            try:
                ids = result_files.read_keys(folder.fs, entry.path, id_column)
            except Exception as error:  # noqa: BLE001 - unreadable in any way means not done
                quarantine(folder, entry.relative, error)
                continue
            done.update(ids)
    return done


def quarantine(folder: Location, relative: str, error: Exception) -> None:
    source = folder.child(relative)
    target = folder.child(UNREADABLE, relative.replace("/", "__"))
    log.warning("%s cannot be read (%s): a killed writer left it; moved to %s, its rows run again", source, error, target)
    if folder.is_local:
        os.makedirs(target.path.rsplit("/", 1)[0], exist_ok=True)
    source.move_to(target)
