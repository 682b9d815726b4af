"""Where stores live: a local folder or any fsspec URL (``s3://``, ``gs://``, ``az://``, ``memory://`` ...).

Everything that reads or writes stores goes through :func:`locate`, which turns a location and its storage options
into a ``pathlib.Path`` (local) or a ``upath.UPath`` (an fsspec filesystem behind the ``pathlib`` interface), so
the same code serves both. Credentials come from where the filesystem looks (for S3: the environment, the AWS
profiles, instance roles) or from ``storage_options``; they are never printed or written anywhere by this package.

The completeness rule of stores in object storage is in :mod:`hest_spatialdata.storage._publish`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upath import UPath
    from zarr.abc.store import Store


def is_url(location: object) -> bool:
    """Whether ``location`` is a URL of an fsspec filesystem other than the local one (``file://``)."""
    if type(location).__name__ in ("PosixUPath", "WindowsUPath", "LocalPath", "FilePath"):
        return False
    if type(location).__module__.startswith("upath"):
        return True
    text = str(location)
    return "://" in text and not text.startswith("file://")


def locate(location: str | Path | UPath, storage_options: Mapping[str, Any] | None = None) -> Path | UPath:
    """A ``Path`` for a local location, a ``UPath`` (with ``storage_options``) for a URL.

    Parameters
    ----------
    location
        A folder, a store, or a URL such as ``s3://bucket/prefix/TENX95.zarr``.
    storage_options
        Keyword arguments of the fsspec filesystem (endpoint, anonymous access, credentials ...).
    """
    if not is_url(location):
        text = str(location)
        return Path(text[len("file://") :] if text.startswith("file://") else text)
    from upath import UPath

    if isinstance(location, UPath) and not storage_options:
        return location
    return UPath(str(location), **dict(storage_options or {}))


def read_json(location: Path | UPath) -> dict[str, Any] | None:
    """The JSON object at ``location``, ``None`` if it is missing or not JSON (access refusals propagate)."""
    try:
        value = json.loads(location.read_bytes() if isinstance(location, Path) else _cat(location))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError):
        return None
    except OSError as e:
        if isinstance(e, PermissionError) or is_url(location):
            raise
        return None
    return value if isinstance(value, dict) else None


def _cat(location: UPath) -> bytes:
    """A whole object in one GET: s3fs otherwise asks for its size first, to split large ones into parallel GETs."""
    fs = location.fs
    single = {"max_concurrency": 1} if hasattr(fs, "max_concurrency") else {}
    return fs.cat_file(location.path, **single)


def zarr_store(location: Path | UPath, *, read_only: bool = True) -> Store:
    """Zarr's own store for ``location``: ``LocalStore`` for a folder, ``FsspecStore`` for a URL."""
    from zarr.storage import FsspecStore, LocalStore

    if isinstance(location, Path):
        return LocalStore(location, read_only=read_only)
    return FsspecStore.from_upath(location, read_only=read_only)


def list_stores(folder: Path | UPath) -> list[Path | UPath]:
    """The ``*.zarr`` entries of a folder (hidden ones excepted), sorted by name."""
    return sorted((p for p in folder.iterdir() if p.name.endswith(".zarr") and not p.name.startswith(".")), key=str)


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """``--storage-option key=value`` items as fsspec keyword arguments.

    A dotted key makes a nested dict (``client_kwargs.endpoint_url=http://...``); a value that reads as JSON
    (``true``, ``3``, ``{"a": 1}``) is decoded, anything else is a string.

    Raises
    ------
    ValueError
        For an item without ``=``.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option {item.split('=')[0]!r}: expected key=value")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        *parents, last = key.split(".")
        target = options
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    return options


def access_message(error: BaseException, location: object) -> str | None:
    """One line for an access refusal (missing or refused credentials, no permission), ``None`` otherwise."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, PermissionError) or type(error).__name__ in ("NoCredentialsError", "ClientError"):
            text = str(error).strip() or type(error).__name__
            return (
                f"access denied to {_printable(location)}: {text} (check the credentials: environment, profile, "
                "or --storage-option)"
            )
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return None


def _printable(location: object) -> str:
    return str(location).split("?", 1)[0]
