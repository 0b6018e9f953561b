"""The bench's config: composed from the same groups as `python -m runner`, checked the same way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: Sequence[str]) -> Dict[str, Any]:
    """The resolved config of `python -m runner <overrides>`, as a plain dict, after the same checks."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner import preflight, schema

    schema.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    schema.validate(cfg)
    config = OmegaConf.to_container(cfg, resolve=True)
    preflight.run_checks(config)
    return config


def side_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The config both sides run: tracking off (the bench logs once, itself), never a dry run."""
    out = json.loads(json.dumps(config))
    out["tracking"]["enabled"] = False
    out["dry_run"] = False
    return out
