"""Where data and runs live: a local path or a URI (s3://, gs://, hf://, file://, ...), one API.

Every reader and writer of the runner goes through a `Location` (a pyarrow filesystem and a
path in it), so the same code reads input from and writes runs to local disk or object
storage. Credentials come from the environment the storage's own SDK reads (AWS_*, GOOGLE_*,
HF_TOKEN): they are never part of a URI we log or save.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlparse

import pyarrow.fs as pafs

# The hub's parquet export of a dataset, as the `datasets` library spells it.
HUB_PARQUET_ALIAS = "@~parquet"
HUB_PARQUET_REVISION = "@refs/convert/parquet"


class StorageError(OSError):
    pass


@dataclass(frozen=True)
class FileEntry:
    path: str  # the file's path inside its filesystem
    relative: str  # relative to the location it was listed from (the file's name for a file)
    size: int
    mtime: Optional[float]  # seconds since the epoch; None where the store does not say


@dataclass(frozen=True)
class Location:
    uri: str  # absolute local path, or scheme://...
    fs: pafs.FileSystem
    path: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def child(self, *parts: str) -> "Location":
        path = posixpath.join(self.path, *parts)
        uri = os.path.join(self.uri, *parts) if self.is_local else posixpath.join(self.uri, *parts)
        return Location(uri, self.fs, path)

    def __str__(self) -> str:
        return self.uri

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def list_files(self) -> List[FileEntry]:
        """The data files here (recursively), or this file itself; none for a missing path.

        Writers leave hidden and underscore-prefixed names beside the data (staging files,
        _SUCCESS markers, quarantined partial files); every reader skips them the same way.
        """
        info = self.info()
        if info.type == pafs.FileType.File:
            return [FileEntry(self.path, self.name, info.size, _mtime(info))]
        if info.type != pafs.FileType.Directory:
            return []
        root = self.path.rstrip("/") + "/"
        entries = []
        for found in self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True)):
            if found.type != pafs.FileType.File:
                continue
            relative = found.path[len(root):] if found.path.startswith(root) else found.base_name
            if any(part.startswith((".", "_")) for part in relative.split("/")):
                continue
            entries.append(FileEntry(found.path, relative, found.size, _mtime(found)))
        return sorted(entries, key=lambda e: e.relative)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file or nothing: a reader never sees half of it.

        Local disk: a staging file renamed over the target. Object stores publish an object
        only when its upload completes, so a direct write is already all-or-nothing.
        """
        parent = posixpath.dirname(self.path)
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
            staging = posixpath.join(parent, f".{self.name}.{uuid.uuid4().hex[:8]}.tmp")
            with open(staging, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(staging, self.path)
            return
        with self.fs.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def delete(self) -> None:
        info = self.info()
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self.path)

    def move_to(self, target: "Location") -> None:
        self.fs.move(self.path, target.path)

    def open_input_file(self):
        return self.fs.open_input_file(self.path)


def _mtime(info: pafs.FileInfo) -> Optional[float]:
    return info.mtime.timestamp() if info.mtime is not None else None


def is_uri(text: str) -> bool:
    scheme = urlparse(str(text)).scheme
    return len(scheme) > 1  # a Windows drive letter is not a scheme


def resolve(uri: str, base: Optional[Path] = None) -> Location:
    """A Location for a local path (relative to `base`, default the working directory) or a URI."""
    text = str(uri)
    if text.startswith("file://"):
        text = urlparse(text).path
    if not is_uri(text):
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        path = path.resolve()
        return Location(str(path), pafs.LocalFileSystem(), path.as_posix())
    if text.startswith("hf://"):
        return _hub_location(text)
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as error:  # an unknown scheme, a missing filesystem package
        raise StorageError(f"{text}: {error}") from error
    return Location(text.rstrip("/"), fs, path.rstrip("/"))


def _hub_location(uri: str) -> Location:
    from huggingface_hub import HfFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    path = uri[len("hf://"):].replace(HUB_PARQUET_ALIAS, HUB_PARQUET_REVISION).rstrip("/")
    return Location(uri.rstrip("/"), PyFileSystem(FSSpecHandler(HfFileSystem())), path)


def probe_readable(location: Location) -> Optional[str]:
    """Why the location cannot be read (as input), or None."""
    try:
        if not location.exists():
            return f"{location} does not exist"
        location.list_files()
    except Exception as error:  # noqa: BLE001 - any storage failure is the answer
        return f"{location} cannot be read ({type(error).__name__}: {error})"
    return None


def probe_writable(location: Location) -> Optional[str]:
    """Why a run cannot be written under the location, or None: writes and deletes a small file."""
    if location.is_local:
        # The run folder must not exist before the run passes its checks: probe the nearest
        # folder that does.
        existing = Path(location.path)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        location = resolve(str(existing))
    probe = location.child(f"_runner_probe_{uuid.uuid4().hex[:8]}")
    try:
        probe.write_bytes(b"probe")
        probe.delete()
    except Exception as error:  # noqa: BLE001 - any storage failure is the answer
        return f"{location} is not writable ({type(error).__name__}: {error})"
    return None
