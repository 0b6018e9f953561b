"""The bench's config: composed from the same groups as `python -m runner`, checked the same way."""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Sequence


def compose(overrides: Sequence[str]) -> Dict[str, Any]:
    """The resolved config of `python -m runner <overrides>`, as plain data, after the same checks."""
    from runner import config as run_config, preflight, schema

    cfg = run_config.compose(overrides)
    schema.validate(cfg)
    config = run_config.to_dict(cfg)
    preflight.run_checks(config)
    return config


def side_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The config both sides run: tracking off (the bench logs once, itself), never a dry run."""
    out = json.loads(json.dumps(config))
    out["tracking"]["enabled"] = False
    out["dry_run"] = False
    return out
