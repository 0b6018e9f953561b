"""The run config outside `python -m runner`'s @hydra.main: the config a command line's
overrides compose to (for the bench, the tests and any other tool), and the config as
plain data.

    cfg = config.compose(["model=llama31_8b", "hw=l4"])     # a DictConfig typed by runner.schema
    run = config.to_object(cfg)                              # a schema.RunConfig: what app.run and below take
    plain = config.to_dict(run)                              # dicts, lists and plain strings (or of cfg)
    cfg = config.typed(plain, ["ray.address=auto"])           # plain data (a saved run's) typed again
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence, Union

from hydra import compose as hydra_compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import schema
from runner.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_NAME = "config"
# The Hydra behaviour the configs are written for; runner/__main__.py's @hydra.main says the same.
VERSION_BASE = "1.3"


def compose(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """What `python -m runner <overrides>` composes. Raises Hydra's ConfigCompositionException
    for an unknown key, a wrong type or a value outside a setting's choices."""
    schema.register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=VERSION_BASE):
        return hydra_compose(config_name=CONFIG_NAME, overrides=list(overrides), return_hydra_config=return_hydra_config)


def to_object(cfg: DictConfig) -> schema.RunConfig:
    """The composed (or typed) config as runner.schema's dataclasses, each choice an Enum
    member: what app.run and everything below it read. Raises schema.UnknownKeyError for keys
    the schema does not know (forced in with `+`), ConfigError for a value left unset."""
    schema.check_keys(cfg)
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as error:
        raise ConfigError(f"the config cannot be read: {error}") from None


def to_dict(cfg: Union[DictConfig, schema.RunConfig]) -> Dict[str, Any]:
    """The resolved config (a DictConfig or a RunConfig) as plain data, each choice
    (runner.schema.Choice) as its string: what yaml.safe_dump, JSON, MLflow params and a run's
    manifest can hold, and what a later runner reads back. The one place plain data is made."""
    if dataclasses.is_dataclass(cfg):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def typed(plain: Mapping[str, Any], overrides: Sequence[str] = ()) -> DictConfig:
    """A config saved as plain data (a run's config.yaml or manifest), then `key=value`
    overrides, merged over the schema: every value checked as at compose time, each choice
    read back from its string, and settings the schema gained since the run at their
    defaults. Raises ConfigError naming the key."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema.RunConfig), plain, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:
        raise ConfigError(f"the config cannot be read: {error}") from None
