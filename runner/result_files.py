"""Finding and opening data files: a run's results/ and failed/, or an input folder.

Writers leave hidden and underscore-prefixed files beside the data (staging files,
_SUCCESS markers); every reader skips them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import List


def list_files(path: Path) -> List[Path]:
    """The data files of a folder (recursively), or the file itself; none for a missing path."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))


def open_dataset(folder: Path, fmt: str):
    """A pyarrow dataset over the folder's files, read lazily, a few columns at a time."""
    import pyarrow.dataset as pds

    file_format = pds.JsonFileFormat() if fmt == "jsonl" else "parquet"
    return pds.dataset([str(p) for p in list_files(folder)], format=file_format)
