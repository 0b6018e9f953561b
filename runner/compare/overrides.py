"""The overrides a sweep and its jobs ran with, as MLflow holds them, read with Hydra's own
parser: a job's `runner.overrides` tag and its parent's `sweep.overrides` param are the
overrides joined by spaces; the parent's `sweep.<key>` params are the sweeper's own params
(an overlay's `hydra.sweeper.params`)."""

from __future__ import annotations

import functools
import re
from typing import Any, Dict, List, Mapping, Optional

SWEEP_OVERRIDES_PARAM = "sweep.overrides"
SWEEPER_PARAM_PREFIX = "sweep."
# Where one override ends and the next begins: a key (with its +, ++ or ~) and =, or ~key alone.
_OVERRIDE_START = re.compile(r"^((\+\+|\+|~)?[A-Za-z_][\w.@/-]*=|~[A-Za-z_][\w.@/-]*$)")


@functools.lru_cache(maxsize=1)
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def split(text: Optional[str]) -> List[str]:
    """'a=1 +b=[x, y]' -> ['a=1', '+b=[x, y]']: a piece that starts no override is part of the
    value before it (a list or a text with spaces)."""
    items: List[str] = []
    for piece in (text or "").split():
        if items and not _OVERRIDE_START.match(piece):
            items[-1] += " " + piece
        else:
            items.append(piece)
    return items


def parse(item: str):
    """Hydra's Override for one item, or None where Hydra cannot read it back."""
    from hydra.errors import HydraException

    try:
        return _parser().parse_override(item)
    except HydraException:
        return None


def values(text: Optional[str]) -> Dict[str, Any]:
    """{key or group: value} of the overrides that set something ('hw=l4' -> {'hw': 'l4'})."""
    out: Dict[str, Any] = {}
    for item in split(text):
        override = parse(item)
        if override is not None and not override.is_delete() and not override.is_sweep_override():
            out[override.key_or_group] = override.value()
    return out


def swept_by_parent(params: Mapping[str, str]) -> List[str]:
    """The keys (or groups) a multirun swept, from what its parent run stores: its command-line
    sweep overrides ('processor.batch_size=4,16,64') and its sweeper's params."""
    keys: List[str] = []
    for item in split(params.get(SWEEP_OVERRIDES_PARAM)):
        override = parse(item)
        if override is not None and override.is_sweep_override():
            keys.append(override.key_or_group)
    for name, value in params.items():
        override = parse(f"{name[len(SWEEPER_PARAM_PREFIX):]}={value}") if name.startswith(SWEEPER_PARAM_PREFIX) else None
        if name != SWEEP_OVERRIDES_PARAM and override is not None and override.is_sweep_override():
            keys.append(override.key_or_group)
    return list(dict.fromkeys(keys))
