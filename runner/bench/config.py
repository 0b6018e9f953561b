"""The bench's config: composed from the same groups as `python -m runner`, checked the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Sequence

from runner.schema import RunConfig


def compose(overrides: Sequence[str]) -> RunConfig:
    """The resolved config of `python -m runner <overrides>`, after the same checks."""
    from runner import config as run_config, preflight, schema

    cfg = run_config.compose(overrides)
    schema.validate(cfg)
    config = run_config.to_object(cfg)
    preflight.run_checks(config)
    return config


def side_config(config: RunConfig) -> Dict[str, Any]:
    """The config both sides run, as plain data (side_config.yaml): tracking off (the bench
    logs once, itself), never a dry run."""
    from runner import config as run_config

    side = dataclasses.replace(config, tracking=dataclasses.replace(config.tracking, enabled=False), dry_run=False)
    return run_config.to_dict(side)


def load_side_config(run_dir: Path) -> RunConfig:
    """The config a side process runs: side_config.yaml, typed again."""
    import yaml

    from runner import config as run_config

    return run_config.to_object(run_config.typed(yaml.safe_load((run_dir / "side_config.yaml").read_text())))
