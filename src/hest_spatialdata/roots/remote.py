"""Remote HEST roots: ``hf://datasets/MahmoodLab/hest[@revision]`` and any fsspec URL, read without downloading.

A root whose name holds ``://`` (``file://`` excepted) is remote. :func:`open_root` resolves it once per process:

- ``hf://`` through huggingface_hub: :class:`~huggingface_hub.HfFileSystem` parses the URL, the access check and
  the revision's commit come from :class:`~huggingface_hub.HfApi` (``HF_ENDPOINT`` read when called, ``HF_TOKEN``
  and ``hf auth login`` honoured), every later read is pinned to that commit. A sample's files are found with one
  ``paths-info`` request for all the names the registry allows (:data:`hest_spatialdata.source.layout.PARTS`), and byte
  ranges are plain ``GET`` requests with a ``Range`` header on the hub's ``resolve`` URL;
- any other URL through ``fsspec.core.url_to_fs`` (the folders of the registry listed once each, ranges read with
  ``fs.open(..., cache_type="none")``).

Every byte range goes through :func:`with_retries`: transient failures (HTTP 5xx and 429, connections cut
mid-body, timeouts) are retried with exponential backoff, and a body of the wrong length is never returned. A
refusal of the hub is :class:`hest_spatialdata.roots.hub.HubAccessError` with the message of ``download``.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from hest_spatialdata.roots import hub

#: Attempts of one byte range (or small-file download) before giving up, and the first backoff in seconds.
ATTEMPTS = 6
BACKOFF_S = 0.05
#: Gap (bytes) between two wanted ranges below which they are fetched as one request.
MERGE_GAP = 16 * 1024
#: Block of the read-through cache of :meth:`RemoteFile.open` (TIFF headers, HDF5 metadata).
BLOCK_SIZE = 64 * 1024


class RemoteReadError(OSError):
    """A remote byte range could not be read exactly, even after retries."""


class _ShortRead(OSError):
    """The server sent fewer (or more) bytes than asked for: retried, never returned."""


def is_remote(root: Any) -> bool:
    """Whether ``root`` names a remote HEST root (a URL other than ``file://``, or an opened :class:`RemoteRoot`)."""
    if isinstance(root, RemoteRoot):
        return True
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


@dataclass(eq=False)
class RemoteRoot:
    """An opened remote HEST root.

    Parameters
    ----------
    url
        The URL as given (``hf://datasets/MahmoodLab/hest@v1``).
    fs
        The fsspec filesystem.
    base
        The root's path in ``fs`` (for the hub: ``datasets/{repo}@{commit}``).
    repo
        For the hub: ``(repo_type, repo_id, commit)``; ``None`` for other filesystems.
    token
        Hugging Face token (``None``: ``HF_TOKEN`` or the stored login).
    """

    url: str
    fs: Any
    base: str
    repo: tuple[str, str, str] | None = None
    token: str | bool | None = None
    _listings: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)
    _files: dict[tuple[str, int], RemoteFile] = field(default_factory=dict, repr=False)

    def __str__(self) -> str:
        return self.url

    def find(self, relative_paths: Iterable[str]) -> dict[str, int]:
        """Which of ``relative_paths`` exist, with their sizes (one request on the hub)."""
        wanted = list(dict.fromkeys(relative_paths))
        if self.repo is not None:
            repo_type, repo_id, commit = self.repo
            api = hub.hub_api(self.token)
            with hub.hub_errors():
                infos = with_retries(
                    f"{self.url}: paths-info",
                    lambda: api.get_paths_info(repo_id, wanted, revision=commit, repo_type=repo_type),
                )
            return {info.path: int(info.size or 0) for info in infos if hasattr(info, "size")}
        found = {}
        for rel in wanted:
            folder, _, name = rel.rpartition("/")
            if name in (listing := self.listing(folder)):
                found[rel] = listing[name]
        return found

    def listing(self, folder: str) -> dict[str, int]:
        """File name -> size of the files of ``folder`` (listed once; an absent folder is empty)."""
        if folder not in self._listings:
            if self.repo is not None:
                repo_type, repo_id, commit = self.repo
                api = hub.hub_api(self.token)

                def tree() -> list[Any]:
                    return list(api.list_repo_tree(repo_id, folder, revision=commit, repo_type=repo_type))

                try:
                    with hub.hub_errors():
                        entries = with_retries(f"{self.url}/{folder}: listing", tree)
                except hub.HubError as e:
                    if hub.http_status(e.__cause__) != 404:  # an absent folder lists as empty
                        raise
                    entries = []
                sized = (e for e in entries if getattr(e, "size", None) is not None)
                files = {e.path.rsplit("/", 1)[-1]: int(e.size) for e in sized}
            else:
                try:
                    entries = self.fs.ls(f"{self.base}/{folder}", detail=True)
                except FileNotFoundError:
                    entries = []
                files = {
                    e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e["size"]) for e in entries if e["type"] == "file"
                }
            self._listings[folder] = files
        return self._listings[folder]

    def file(self, relative_path: str, size: int) -> RemoteFile:
        """The remote file at ``relative_path`` (of ``size`` bytes).

        One object per file of an opened root, so that its header blocks (:meth:`RemoteFile.open`) are fetched once
        however many readers parse it (the slide's shape, its levels, the store's attributes).
        """
        key = (relative_path, size)
        if key not in self._files:
            self._files[key] = RemoteFile(self, relative_path, size)
        return self._files[key]


@dataclass(frozen=True, eq=False)
class RemoteFile:
    """One file of a remote HEST root, read by byte ranges.

    Parameters
    ----------
    root
        The opened root.
    relative_path
        Its path in the root (``wsis/TENX95.tif``).
    size
        Its size in bytes.
    """

    root: RemoteRoot
    relative_path: str
    size: int
    #: Blocks read through :meth:`open`, shared by its readers (a header parsed twice is fetched once).
    blocks: OrderedDict[int, bytes] = field(default_factory=OrderedDict, repr=False)

    def __str__(self) -> str:
        return f"{self.root.url.rstrip('/')}/{self.relative_path}"

    @property
    def name(self) -> str:
        """The file name."""
        return self.relative_path.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        """The file name's last suffix (``.tif``)."""
        return Path(self.name).suffix

    def is_file(self) -> bool:
        """Always ``True``: a remote file exists once found (mirrors :meth:`pathlib.Path.is_file`)."""
        return True

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the file, exactly, retrying transient failures."""
        end = min(end, self.size)
        if end <= start:
            return b""
        return with_retries(f"{self}: bytes {start}-{end - 1}", lambda: self._fetch_once(start, end))

    def fetch_ranges(self, ranges: list[tuple[int, int]], gap: int = MERGE_GAP) -> list[bytes]:
        """Several ranges ``[start, end)``, neighbours closer than ``gap`` fetched together (one request per run)."""
        out: list[bytes] = [b""] * len(ranges)
        order = sorted((r for r in range(len(ranges)) if ranges[r][1] > ranges[r][0]), key=lambda r: ranges[r][0])
        run: list[int] = []
        for index in [*order, None]:
            if index is not None and run and ranges[index][0] - max(ranges[r][1] for r in run) <= gap:
                run.append(index)
                continue
            if run:
                start, end = ranges[run[0]][0], max(ranges[r][1] for r in run)
                data = self.fetch(start, end)
                for r in run:
                    out[r] = data[ranges[r][0] - start : ranges[r][1] - start]
            run = [index] if index is not None else []
        return out

    def open(self, block_size: int = BLOCK_SIZE) -> io.RawIOBase:
        """A seekable binary file reading through a block cache (reads of 4 blocks or more go straight to the server).

        Unbuffered: a buffer would turn each small read at an odd offset into a large uncached one.
        """
        return _RangeReader(self, block_size)

    def local_copy(self) -> Path:
        """A local copy of this (small) file: the huggingface_hub cache for the hub, else a temporary folder."""
        if self.root.repo is not None:
            from huggingface_hub import hf_hub_download

            repo_type, repo_id, commit = self.root.repo
            with hub.hub_errors():
                return Path(
                    with_retries(
                        f"{self}: download",
                        lambda: hf_hub_download(
                            repo_id,
                            self.relative_path,
                            repo_type=repo_type,
                            revision=commit,
                            token=self.root.token,
                            endpoint=hub.current_endpoint(),
                        ),  # fmt: skip
                    )
                )
        target = _scratch() / self.relative_path
        if not target.is_file() or target.stat().st_size != self.size:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.fetch(0, self.size))
        return target

    def _fetch_once(self, start: int, end: int) -> bytes:
        if self.root.repo is not None:
            data = self._hub_range(start, end)
        else:
            with self.root.fs.open(
                f"{self.root.base}/{self.relative_path}", "rb", cache_type="none", size=self.size
            ) as file:
                file.seek(start)
                data = file.read(end - start)
        if len(data) != end - start:
            raise _ShortRead(f"asked for {end - start} bytes, got {len(data)}")
        return data

    def _hub_range(self, start: int, end: int) -> bytes:
        from huggingface_hub import constants as hf_constants
        from huggingface_hub import get_session, hf_hub_url
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        repo_type, repo_id, commit = self.root.repo  # type: ignore[misc]
        url = hf_hub_url(repo_id, self.relative_path, repo_type=repo_type, revision=commit, endpoint=_endpoint())
        headers = build_hf_headers(token=self.root.token, library_name="hest-spatialdata")
        headers["Range"] = f"bytes={start}-{end - 1}"
        with hub.hub_errors():
            response = get_session().get(url, headers=headers, timeout=hf_constants.HF_HUB_DOWNLOAD_TIMEOUT)
            hf_raise_for_status(response)
        if response.status_code == 200:  # a server ignoring Range sends the whole file
            return response.content[start:end] if len(response.content) == self.size else response.content
        return response.content


class SharedRanges:
    """Byte ranges of one remote file fetched together for several readers, each kept until a reader takes it.

    A conversion reads a slide chunk by chunk; the store's chunks side by side in one block of the slide share its
    requests (one per row of tiles): the first chunk fetches the tiles of the whole block (:meth:`prefetch`), and each
    chunk then takes its own (:meth:`take`; waiting for them while they are in flight). A window takes only its tiles.

    Parameters
    ----------
    file
        The remote file.
    max_bytes
        Ranges held for later readers beyond this are dropped, oldest first (and fetched again if taken).
    """

    def __init__(self, file: RemoteFile, max_bytes: int = 256 * 2**20) -> None:
        self._file, self._max = file, max_bytes
        self._held: OrderedDict[tuple[int, int], bytes | Future[bytes]] = OrderedDict()
        self._held_bytes = 0
        self._prefetched: set[Hashable] = set()
        self._lock = threading.Lock()

    def prefetch(self, block: Hashable, ranges: list[tuple[int, int]]) -> None:
        """Fetch the ranges of ``block`` (adjacent ones in one request) and hold them for :meth:`take`.

        A block is fetched ahead once: the ranges its readers took are not fetched again.
        """
        with self._lock:
            if block in self._prefetched:
                return
            self._prefetched.add(block)
            todo = [r for r in dict.fromkeys(ranges) if r[1] > r[0] and r not in self._held]
            pending = {r: Future() for r in todo}
            self._held.update(pending)
        if not todo:
            return
        try:
            data = self._file.fetch_ranges(todo)
        except BaseException as e:
            with self._lock:
                for r in todo:
                    if self._held.get(r) is pending[r]:
                        del self._held[r]
            for future in pending.values():
                future.set_exception(e)
            raise
        with self._lock:
            for r, chunk in zip(todo, data, strict=True):
                if self._held.get(r) is pending[r]:  # else a reader took it while in flight
                    self._held[r] = chunk
                    self._held_bytes += len(chunk)
            self._drop_oldest()
        for r, chunk in zip(todo, data, strict=True):
            pending[r].set_result(chunk)

    def take(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        """The bytes of each range: held ones handed over (and forgotten), the others fetched now."""
        out: list[bytes] = [b""] * len(ranges)
        waiting: list[tuple[int, Future[bytes]]] = []
        missing: list[int] = []
        with self._lock:
            for k, r in enumerate(ranges):
                held = self._held.pop(r, None) if r[1] > r[0] else b""
                if isinstance(held, bytes):
                    self._held_bytes -= len(held)
                    out[k] = held
                elif held is not None:
                    waiting.append((k, held))
                else:
                    missing.append(k)
        for k, chunk in zip(missing, self._file.fetch_ranges([ranges[k] for k in missing]), strict=True):
            out[k] = chunk
        for k, future in waiting:
            out[k] = future.result()
        return out

    def _drop_oldest(self) -> None:
        for r in [r for r, held in self._held.items() if isinstance(held, bytes)]:
            if self._held_bytes <= self._max:
                break
            self._held_bytes -= len(self._held.pop(r))  # type: ignore[arg-type]


_BLOCKS_LOCK = threading.Lock()


class _RangeReader(io.RawIOBase):
    """A seekable raw file over :meth:`RemoteFile.fetch`, caching the last blocks read."""

    def __init__(self, file: RemoteFile, block_size: int, max_blocks: int = 64) -> None:
        self._file, self._block, self._max = file, block_size, max_blocks
        self._pos = 0
        self._blocks = file.blocks
        self._lock = _BLOCKS_LOCK

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._file.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start, end = self._pos, min(self._pos + len(view), self._file.size)
        if end <= start:
            return 0
        big = end - start >= 4 * self._block  # a large read goes straight to the server, past the cache
        data = self._file.fetch(start, end) if big else self._from_blocks(start, end)
        view[: len(data)] = data
        self._pos = start + len(data)
        return len(data)

    def _from_blocks(self, start: int, end: int) -> bytes:
        first, last = start // self._block, (end - 1) // self._block
        data = b"".join(self._cached(b) for b in range(first, last + 1))
        return data[start - first * self._block : end - first * self._block]

    def _cached(self, index: int) -> bytes:
        with self._lock:
            if index in self._blocks:
                self._blocks.move_to_end(index)
                return self._blocks[index]
        data = self._file.fetch(index * self._block, (index + 1) * self._block)
        with self._lock:
            self._blocks[index] = data
            while len(self._blocks) > self._max:
                self._blocks.popitem(last=False)
        return data


# --------------------------------------------------------------------------------------------- opening a root


def open_root(root: str | RemoteRoot, *, token: str | bool | None = None) -> RemoteRoot:
    """Resolve a remote HEST root (once per process, URL, endpoint and token).

    Parameters
    ----------
    root
        ``hf://datasets/MahmoodLab/hest[@revision]`` or another fsspec URL.
    token
        Hugging Face token; default ``HF_TOKEN`` or the stored login.

    Raises
    ------
    hest_spatialdata.roots.hub.HubAccessError
        If the hub refuses access (gated dataset, no or invalid token).
    FileNotFoundError
        If the root does not exist.
    """
    if isinstance(root, RemoteRoot):
        return root
    return _open_root(root.rstrip("/"), _endpoint(), token)


@cache
def _open_root(url: str, endpoint: str, token: str | bool | None) -> RemoteRoot:
    if url.startswith("hf://"):
        from huggingface_hub import HfFileSystem

        fs = HfFileSystem(endpoint=endpoint, token=token, skip_instance_cache=True)
        api = hub.hub_api(token)
        with hub.hub_errors():
            resolved = _resolve(fs, url)
            repo_type, repo_id = resolved.repo_type, resolved.repo_id
            api.auth_check(repo_id, repo_type=repo_type)
            info = api.repo_info(repo_id, repo_type=repo_type, revision=resolved.revision)
        commit = info.sha or resolved.revision
        base = f"{repo_type}s/{repo_id}@{commit}"
        if resolved.path_in_repo:
            raise ValueError(f"{url}: a HEST root is the repository itself, not a folder in it")
        return RemoteRoot(url, fs, base, (repo_type, repo_id, commit), token)
    from fsspec.core import url_to_fs

    fs, base = url_to_fs(url)
    if not fs.isdir(base):
        raise FileNotFoundError(f"{url}: not found")
    return RemoteRoot(url, fs, base.rstrip("/"))


def _resolve(fs: Any, url: str) -> Any:
    """``HfFileSystem.resolve_path``, whose FileNotFoundError hides a refusal (401 with a bad token): re-raised."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return fs.resolve_path(url)
    except FileNotFoundError as e:
        if isinstance(e.__cause__, RepositoryNotFoundError):
            raise e.__cause__ from e  # made a HubAccessError by hub.hub_errors
        raise


def forget_roots() -> None:
    """Forget the roots opened so far (the next :func:`open_root` checks access and resolves the revision again)."""
    _open_root.cache_clear()


def _endpoint() -> str:
    return hub.current_endpoint() or "https://huggingface.co"


# --------------------------------------------------------------------------------------------- retries


def with_retries[T](what: str, call: Callable[[], T], *, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S) -> T:
    """Call ``call()``, retrying transient failures with exponential backoff.

    Parameters
    ----------
    what
        What is read, for the error message.
    call
        The request.
    attempts
        How many times to try.
    backoff_s
        First wait in seconds (doubled at each retry).

    Raises
    ------
    RemoteReadError
        If every attempt failed transiently; other errors (access refused, not found) at once.
    """
    for attempt in range(attempts):
        try:
            return call()
        except Exception as e:
            if not is_transient(e):
                raise
            if attempt == attempts - 1:
                raise RemoteReadError(f"{what}: failed {attempts} times, last: {type(e).__name__}: {e}") from e
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def is_transient(error: BaseException) -> bool:
    """Whether a failed request is worth repeating (5xx, 429, cut connection, timeout, short body)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, hub.HubAccessError | FileNotFoundError | PermissionError):
            return False
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status is not None:
            return status >= 500 or status in (408, 429)
        if isinstance(error, (_ShortRead, TimeoutError, ConnectionError, *hub.network_errors())):
            return True
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return False


@cache
def _scratch() -> Path:
    """A temporary folder of this process for small files of non-hub roots (removed at exit)."""
    import atexit
    import shutil

    path = Path(tempfile.mkdtemp(prefix="hest-remote-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
