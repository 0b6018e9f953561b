"""A Hugging Face hub dataset, read as files: the hub's own Parquet export of it
(`refs/convert/parquet`, one folder per config and split), through the parquet reader.

So a hub dataset streams like any Parquet folder (no `datasets` download into the
driver), is counted from the footers, and resumes by chunk like local files. The token,
if any, comes from HF_TOKEN in the environment, which the workers of a local Ray inherit.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from runner import storage
from runner.readers.parquet import ParquetReader

DEFAULT_CONFIG = "default"


def hub_uri(repo: str, config: Optional[str], split: str) -> str:
    """The folder of the export that holds one config's split, as an hf:// URI."""
    return f"hf://datasets/{repo}{storage.HUB_PARQUET_ALIAS}/{config or DEFAULT_CONFIG}/{split}"


class HubReader(ParquetReader):
    source = "hub"
    missing_fix = "check the repo name, dataset.hub_config and dataset.split (the hub's Parquet export has a folder per config and split)"

    def __init__(self, repo: str, config: Optional[str], split: str, **settings: Any):
        location = storage.resolve(hub_uri(repo, config, split))
        setting = f"dataset.path={repo!r} (dataset.hub_config={config!r}, dataset.split={split!r})"
        super().__init__(location, setting=setting, path_setting=repo, **settings)
        self.repo, self.config, self.split = repo, config, split

    @property
    def file_kind(self) -> str:
        return "parquet"

    def _settings(self) -> Dict[str, Any]:
        return {"hub_config": self.config, "split": self.split}
