"""Put a finished local store into object storage so that it lands complete or not at all.

Object storage has no rename, so completeness is a rule of this package (docs/object_storage.md):

1. **Claim.** A converter first creates ``{id}.zarr/.hest-claim.json`` with a conditional create (S3
   ``If-None-Match: *``; fsspec's ``mode="create"``). If it exists, another converter is at work: the second one
   stops with :class:`StoreBusyError`, unless the claim is stale (its process is gone on this host, or it is older
   than :data:`STALE_CLAIM_HOURS`), in which case it is removed and claimed again. Two converters of one sample
   therefore never write the same store at once, and never leave a mixed store.
2. **Clean.** Whatever is under the store's prefix (an abandoned partial upload, or the old store with
   ``overwrite``, whose root ``zarr.json`` is deleted first) is removed.
3. **Upload** every object except the root ``zarr.json``, in parallel, each retried on transient failures.
4. **Commit.** The root ``zarr.json`` is written last; then the claim is removed.

A store is complete when its root ``zarr.json`` (with ``attrs["hest"]``) exists: every reader here checks that
(:func:`hest_spatialdata.storage.store.store_is_complete` / ``store_attrs``). A conversion that fails or is killed never
writes that object, so nothing complete-looking is left; the next run cleans the partial objects in step 2.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata.errors import StoreExistsError
from hest_spatialdata.roots.remote import with_retries

if TYPE_CHECKING:
    from upath import UPath

CLAIM_NAME = ".hest-claim.json"
ROOT_METADATA = "zarr.json"
#: A claim older than this is abandoned whatever host wrote it (a converter on another machine that died).
STALE_CLAIM_HOURS = float(os.environ.get("HEST_STALE_CLAIM_HOURS", "24"))
#: Objects uploaded at once.
UPLOAD_THREADS = 8


class StoreBusyError(FileExistsError):
    """Another converter holds the claim on this store."""


def publish_store(local: Path, target: UPath, *, sample_id: str, overwrite: bool) -> None:
    """Upload the store folder ``local`` to ``target`` under the completeness rule of this module.

    Parameters
    ----------
    local
        A complete store on the local disk.
    target
        The store's URL (a ``UPath`` with its storage options).
    sample_id
        For messages.
    overwrite
        Replace a complete store found at ``target``.

    Raises
    ------
    StoreExistsError
        If a complete store is at ``target`` and ``overwrite`` is false.
    StoreBusyError
        If another live converter holds the store's claim.
    """
    fs, root = target.fs, target.path.rstrip("/")
    token = _claim(fs, root, sample_id)
    try:
        fs.invalidate_cache(root)  # a listing cached before the claim could hide a store finished meanwhile
        if fs.exists(f"{root}/{ROOT_METADATA}"):
            if not overwrite:  # someone else's complete store: left exactly as it is
                raise StoreExistsError(f"sample {sample_id}: {target} exists; pass --overwrite to replace it")
            fs.rm_file(f"{root}/{ROOT_METADATA}")  # the old store stops being complete before anything changes
        _upload(fs, local, root)
    finally:
        _release(fs, root, token)


def _upload(fs: Any, local: Path, root: str) -> None:
    """Clean ``root``, upload every file of ``local`` under it, the root ``zarr.json`` last; on failure clean up."""
    try:
        _clean(fs, root)
        files = sorted(p for p in local.rglob("*") if p.is_file() and p.relative_to(local).as_posix() != ROOT_METADATA)
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            list(pool.map(lambda p: _put(fs, p, f"{root}/{p.relative_to(local).as_posix()}"), files))
        _put(fs, local / ROOT_METADATA, f"{root}/{ROOT_METADATA}")
    except BaseException:
        _clean(fs, root, quiet=True)  # never complete-looking (no root), and no debris where possible
        raise


def remove_partial(target: UPath) -> bool:
    """Remove an abandoned partial store (no root ``zarr.json``, no live claim); whether anything was removed."""
    fs, root = target.fs, target.path.rstrip("/")
    if not fs.exists(root) or fs.exists(f"{root}/{ROOT_METADATA}"):
        return False
    claim = _read_claim(fs, root)
    if claim is not None and not _stale(claim):
        return False
    _clean(fs, root)
    if claim is not None:
        fs.rm_file(f"{root}/{CLAIM_NAME}")
    return True


# --------------------------------------------------------------------------------------------- claim


def _claim(fs: Any, root: str, sample_id: str) -> str:
    token = uuid.uuid4().hex
    body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token, "created": time.time()})
    key = f"{root}/{CLAIM_NAME}"
    for _ in range(2):
        try:
            with_retries(key, lambda: fs.pipe_file(key, body.encode(), mode="create"))
            return token
        except FileExistsError:
            claim = _read_claim(fs, root)
            if claim is not None and claim.get("token") == token:  # our create went through, its reply was lost
                return token
            if claim is not None and not _stale(claim):
                raise _busy(sample_id, root, claim) from None
            fs.rm_file(f"{root}/{CLAIM_NAME}")
    raise StoreBusyError(f"sample {sample_id}: could not claim {root} (another converter keeps claiming it)")


def check_not_busy(target: UPath, sample_id: str) -> None:
    """Raise :class:`StoreBusyError` if a live converter holds ``target``'s claim (publishing checks again).

    Parameters
    ----------
    target
        The store's URL.
    sample_id
        For the message.
    """
    fs, root = target.fs, target.path.rstrip("/")
    claim = _read_claim(fs, root)
    if claim is not None and not _stale(claim):
        raise _busy(sample_id, root, claim)


def _busy(sample_id: str, root: str, claim: dict[str, Any]) -> StoreBusyError:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(claim.get("created", 0))))
    return StoreBusyError(
        f"sample {sample_id}: {root} is being written by {claim.get('host')}:{claim.get('pid')} "
        f"since {since}; wait for it, or remove {CLAIM_NAME} if that converter is gone"
    )


def _read_claim(fs: Any, root: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(f"{root}/{CLAIM_NAME}"))
    except (FileNotFoundError, ValueError):
        return None


def _stale(claim: dict[str, Any]) -> bool:
    if time.time() - float(claim.get("created", 0)) > STALE_CLAIM_HOURS * 3600:
        return True
    if claim.get("host") != socket.gethostname():
        return False
    return not process_alive(int(claim.get("pid", -1)))


def _release(fs: Any, root: str, token: str) -> None:
    claim = _read_claim(fs, root)
    if claim is not None and claim.get("token") == token:
        fs.rm_file(f"{root}/{CLAIM_NAME}")


# --------------------------------------------------------------------------------------------- objects


def _clean(fs: Any, root: str, *, quiet: bool = False) -> None:
    """Remove every object under ``root`` but the claim."""
    try:
        paths = [p for p in fs.find(root) if not p.endswith(f"/{CLAIM_NAME}")]
        if paths:
            fs.rm(paths)
    except Exception:
        if not quiet:
            raise
    fs.invalidate_cache(root)


def _put(fs: Any, local: Path, remote: str) -> None:
    with_retries(remote, lambda: fs.put_file(str(local), remote))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (an unreadable one counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
