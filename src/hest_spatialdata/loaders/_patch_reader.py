"""Cutting and resampling patches from a pyramid level's chunks, for :class:`~hest_spatialdata.loaders.PatchDataset`.

Two ways of working, chosen per dataset:

- **per patch**: a patch reads the chunks it covers (kept in a bounded :class:`ChunkCache`) and is resampled.
  Neighbouring patches share chunks, so the cache saves decoding; but at 0.27 µm/px a 224-px patch at 0.5 µm/px
  covers ~0.5 MB of level-0 pixels, and a shuffled epoch over several slides needs more decoded chunks than a
  cache of reasonable size holds, so most chunks are decoded several times per epoch;
- **by band** (``read_ahead``): the first patch asked of a band of chunk rows cuts every patch of that band at once
  and keeps the finished patches in the cache. A finished 224-px patch takes 150 KB against ~530 KB of decoded
  chunks under it, so the cache holds a whole cohort's patches where it would not hold their chunks. A band's chunks
  are decoded row after row in a thread pool, each row freed once the squares over it are cut, and the chunks a band
  shares with its neighbours (the squares of a band reach into the row below it) are kept as spares until the other
  band is cut: the first epoch decodes each chunk once, and the next ones only copy patches out.

Resampling (:func:`resample`) is by default HEST's own: OpenCV's ``cv2.resize`` with its default bilinear
interpolation, as hestcore's ``WSIPatcher`` makes the patches of HEST's h5; a level that already has the asked
resolution is only cut.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
from PIL import Image

#: Value of the pixels of a patch that lie off the slide (black, as HEST's OpenSlide crops).
FILL_VALUE = 0

#: Chunk rows per band (``read_ahead``). A band's squares reach into the chunk row below it (~40 % of them at 415 px
#: in 1024-px chunks); the chunks two bands share are decoded once (kept as spares until the other band is cut), so
#: the height only sets how many patches the first request of a band waits for.
BAND_ROWS = 2

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


#: One band cut ahead at a time per process (:meth:`PatchCutter._cut_a_band_ahead`), in its own thread: it waits on
#: the pool's tasks, so it must not be one of them.
_AHEAD_BUSY = threading.Lock()


def _ahead_pool() -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        if -1 not in _POOLS:
            _POOLS[-1] = ThreadPoolExecutor(1, thread_name_prefix="hest-patches-ahead")
        return _POOLS[-1]


#: Datasets' cutters and caches alive in this process, whose locks a forked child makes anew.
_LOCKED: weakref.WeakSet[Any] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Start pools afresh and make every lock anew in a forked process (a DataLoader worker on Linux).

    The child has none of its parent's threads: an inherited pool never runs a task, and a lock a parent's thread
    held at the fork is never released.
    """
    global _POOLS_LOCK, _AHEAD_BUSY
    _POOLS.clear()
    _POOLS_LOCK, _AHEAD_BUSY = threading.Lock(), threading.Lock()
    for item in list(_LOCKED):
        item._new_locks()


os.register_at_fork(after_in_child=_after_fork_in_child)


def thread_pool(threads: int) -> ThreadPoolExecutor | None:
    """One pool of ``threads`` threads per process and size (``None`` for one thread: work in the caller)."""
    if threads <= 1:
        return None
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="hest-patches")
        return _POOLS[threads]


def default_threads() -> int:
    """Threads for decoding and resampling: the cores this process may use, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def parallel_map(pool: ThreadPoolExecutor | None, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[function(x) for x in items]``, in ``pool`` when there is one (zstd, file reads, OpenCV, PIL free the GIL)."""
    if pool is None or len(items) < 2:
        return [function(x) for x in items]
    return list(pool.map(function, items))


class ChunkCache:
    """Decoded chunks or finished patches kept in memory, least recently used dropped past ``max_bytes``.

    One per :class:`~hest_spatialdata.loaders.dataset.PatchDataset` by default; a cohort passes one to all its stores'
    datasets, so that the memory bound holds for the whole cohort. Safe to use from several threads. Arrays put as
    ``spare`` (chunks kept for a neighbouring band, which saves decoding them again) are dropped before the others.

    Parameters
    ----------
    max_bytes
        Memory for the arrays (0: keep nothing).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._spare: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._new_locks()
        _LOCKED.add(self)

    def _new_locks(self) -> None:
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> np.ndarray | None:
        """The array under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            for items in (self._items, self._spare):
                block = items.get(key)
                if block is not None:
                    items.move_to_end(key)
                    return block
            return None

    def put(self, key: tuple[Any, ...], block: np.ndarray, *, spare: bool = False) -> None:
        """Keep ``block``, dropping spare arrays, then the least recently used ones, past the budget."""
        if self.max_bytes <= 0:
            return
        with self._lock:
            self._drop(key)
            self.nbytes += block.nbytes
            (self._spare if spare else self._items)[key] = block
            while self.nbytes > self.max_bytes and (self._spare or self._items):
                _, evicted = (self._spare or self._items).popitem(last=False)
                self.nbytes -= evicted.nbytes

    def pop(self, key: tuple[Any, ...]) -> np.ndarray | None:
        """Take the array under ``key`` out of the cache (``None`` if it is not there)."""
        with self._lock:
            return self._drop(key)

    def _drop(self, key: tuple[Any, ...]) -> np.ndarray | None:
        block = self._items.pop(key, None)
        if block is None:
            block = self._spare.pop(key, None)
        if block is not None:
            self.nbytes -= block.nbytes
        return block

    def __getstate__(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes}  # a process's cache stays in it

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])


class DaskChunks:
    """Chunks of an in-memory or dask (c, y, x) array (an element not backed by a store), one at a time."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        chunks = getattr(array, "chunks", None)
        self.y_edges = np.cumsum((0, *chunks[1])) if chunks else np.array([0, self.shape[1]])
        self.x_edges = np.cumsum((0, *chunks[2])) if chunks else np.array([0, self.shape[2]])

    def read(self, by: int, bx: int) -> np.ndarray:
        block = self.array[:, self.y_edges[by] : self.y_edges[by + 1], self.x_edges[bx] : self.x_edges[bx + 1]]
        return np.asarray(block.compute(scheduler="synchronous") if hasattr(block, "compute") else block)


class PatchCutter:
    """Patches of one pyramid level: squares of ``size`` level px at ``origins``, resampled to ``out_px``.

    Parameters
    ----------
    chunks
        The level's chunk reader (``RawChunks``, ``ZarrChunks`` or :class:`DaskChunks`).
    origins
        (n, 2) int top-left (x, y) of every item's square, in level pixels.
    size
        Side of the squares in level pixels.
    out_px
        Side of the returned patches.
    cache
        Where chunks (per patch) or finished patches (by band) are kept.
    key
        Identity of the level in a shared cache.
    read_ahead
        Cut whole bands of patches (see the module docstring).
    threads
        Threads decoding and resampling a band.
    method
        How patches are resampled, see :func:`resample`.
    """

    def __init__(
        self, chunks: Any, origins: np.ndarray, size: int, out_px: int, cache: ChunkCache, key: Any,
        *, read_ahead: bool, threads: int, method: str = "hest",
    ) -> None:  # fmt: skip
        if method not in RESAMPLE_METHODS:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLE_METHODS)}, got {method!r}")
        self.chunks, self.origins, self.size, self.out_px = chunks, origins, int(size), int(out_px)
        self.method = method
        self.cache, self.key, self.read_ahead, self.threads = cache, key, read_ahead, threads
        if hasattr(chunks, "y_edges"):
            self.y_edges, self.x_edges = chunks.y_edges, chunks.x_edges
        else:
            _, chunk_y, chunk_x = chunks.chunk_shape
            self.y_edges = np.append(np.arange(0, chunks.shape[1], chunk_y), chunks.shape[1])
            self.x_edges = np.append(np.arange(0, chunks.shape[2], chunk_x), chunks.shape[2])
        self.rows, self.cols, self.off_level = _square_blocks(origins, self.size, self.y_edges, self.x_edges)
        self.band_of = self.rows[:, 0] // BAND_ROWS
        self._band_ids = np.unique(self.band_of).tolist()
        self._bands_cut: set[int] = set()
        self._last_band: int | None = None
        self._new_locks()
        _LOCKED.add(self)

    def _new_locks(self) -> None:
        self._band_lock = threading.Lock()
        self._band_locks: dict[int, threading.Lock] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_band_lock", "_band_locks", "_bands_cut", "_last_band"):  # a DataLoader worker starts afresh
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._bands_cut, self._last_band = set(), None
        self._new_locks()
        _LOCKED.add(self)

    def patches(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Patches of ``indices`` (each (out_px, out_px, 3) uint8, a fresh array)."""
        found = {i: self.cache.get((self.key, "patch", i)) for i in set(indices)} if self.read_ahead else {}
        missing = sorted(i for i, patch in found.items() if patch is None) if self.read_ahead else sorted(set(indices))
        if self.read_ahead:
            for band in sorted({int(self.band_of[i]) for i in missing}):
                found.update(self._cut_band(band, missing))
        else:
            found.update(zip(missing, parallel_map(thread_pool(self.threads), self._cut_one, missing), strict=True))
        if not self.read_ahead:
            return [found[i] for i in indices]
        # the caller gets its own copy of each kept patch, made in the pool: copying the batch is the one serial
        # step of an epoch, and a patch just cut by another thread is slow to copy from this one
        # (inline while a band is cut ahead: the copies would wait behind its tasks in the pool)
        pool = None if _AHEAD_BUSY.locked() else thread_pool(self.threads)
        batch = parallel_map(pool, np.copy, [found[i] for i in indices])
        self._cut_a_band_ahead()
        return batch

    def _cut_a_band_ahead(self) -> None:
        """Start cutting, in the background, one band no request has asked for yet (next to the last one cut).

        An epoch asks for every band, so this is work it would do anyway, done while the caller uses the batch; one
        band at a time per process, and one per request at most, so a few requests start little.
        """
        if self.threads <= 1 or not _AHEAD_BUSY.acquire(blocking=False):
            return
        with self._band_lock:
            cut, last = set(self._bands_cut), self._last_band
        uncut = [b for b in self._band_ids if b not in cut]
        nearby = [b for b in (last + 1, last - 1) if b in uncut] if last is not None else []
        band = (nearby or uncut or [None])[0]
        patch_bytes = self.out_px**2 * self.chunks.shape[0]
        if band is None or self.cache.nbytes + len(self._members(band)) * patch_bytes > self.cache.max_bytes:
            _AHEAD_BUSY.release()  # all cut, or the cache would drop patches for it: no work that may be wasted
            return

        def cut_ahead() -> None:
            try:
                self._cut_band(band, [])
            except Exception:  # noqa: BLE001 - the request that needs this band cuts it again and raises
                pass
            finally:
                _AHEAD_BUSY.release()

        try:
            _ahead_pool().submit(cut_ahead)
        except RuntimeError:  # the interpreter is shutting down
            _AHEAD_BUSY.release()

    # ------------------------------------------------------------------ by band

    def _cut_band(self, band: int, wanted: list[int]) -> dict[int, np.ndarray]:
        with self._band_lock:
            lock = self._band_locks.setdefault(band, threading.Lock())
        with lock:  # two threads asking one band: the second finds the first's patches
            members = self._members(band)
            done = {i: p for i in members if (p := self.cache.get((self.key, "patch", i))) is not None}
            todo = [i for i in members if i not in done]
            with self._band_lock:
                neighbours = [b for b in (band - 1, band + 1) if b not in self._bands_cut]
            wanted_later = {b for other in neighbours for i in self._members(other) for b in self._blocks(i)}
            for i, patch in self._cut_row_by_row(todo, wanted_later).items():
                self.cache.put((self.key, "patch", i), patch)
                done[i] = patch
            with self._band_lock:
                self._bands_cut.add(band)
                self._last_band = band
        return {i: done[i] for i in wanted if i in done}

    def _members(self, band: int) -> list[int]:
        return np.flatnonzero(self.band_of == band).tolist()

    def _cut_row_by_row(self, todo: list[int], wanted_later: set[tuple[int, int]]) -> dict[int, np.ndarray]:
        """Patches of ``todo``, their chunks decoded one chunk row after the other and dropped once cut.

        Every task goes to the pool at once, in an order that keeps both the threads and the memory in check: the
        chunks of row ``r + 1``, then the squares whose last row is ``r``. A square's task waits only on chunks
        queued before it (already started: the pool is first in, first out), and a row's chunks are freed when the
        last square over them is cut, so a band holds about two chunk rows however tall it is.

        The chunk rows a band shares with its neighbours (its squares reach into the row below) are decoded once:
        chunks in ``wanted_later`` (those a band not yet cut needs) are kept in the cache as spares, and a band takes
        the spares its neighbour left instead of decoding them.
        """
        pool = thread_pool(self.threads) or _INLINE
        users: dict[int, list[int]] = {}  # chunk row -> the squares over it
        cutting: dict[int, Future] = {}
        for i in todo:
            if self.off_level[i]:  # all fill value: no chunk to wait for
                cutting[i] = pool.submit(self._cut, i, None)
                continue
            for row in range(self.rows[i, 0], self.rows[i, 1] + 1):
                users.setdefault(int(row), []).append(i)
        rows = sorted(users)
        decoding: dict[tuple[int, int], Any] = {}
        for position in range(len(rows) + 1):
            if position < len(rows):
                row = rows[position]
                blocks = sorted({(row, bx) for i in users[row] for bx in range(self.cols[i, 0], self.cols[i, 1] + 1)})
                decoding.update(self._submit_reads(pool, blocks, wanted_later))
            if position == 0:
                continue
            last = rows[position - 1]
            for i in users[last]:
                if self.rows[i, 1] == last:
                    needed = {b: decoding[b] for b in self._blocks(i)}
                    cutting[i] = pool.submit(self._cut, i, lambda b, needed=needed: needed[b].result())
            still_needed = min((self.rows[i, 0] for r in rows[position:] for i in users[r]), default=last + 1)
            for block in [b for b in decoding if b[0] < still_needed]:
                del decoding[block]  # the squares over it hold it until they are cut
        return {i: future.result() for i, future in cutting.items()}

    def _submit_reads(
        self, pool: Any, blocks: list[tuple[int, int]], wanted_later: set[tuple[int, int]]
    ) -> dict[tuple[int, int], Any]:
        """A future per chunk of ``blocks``: a spare a neighbouring band left, or a read.

        A remote store's chunk files are all fetched at once and decoded as each arrives. Chunks in ``wanted_later``
        are kept as spares once read.
        """
        futures: dict[tuple[int, int], Any] = {}
        for b in blocks:
            key = (self.key, "chunk", *b)
            spare = self.cache.get(key) if b in wanted_later else self.cache.pop(key)  # a third band may need it
            if spare is not None:
                futures[b] = _Done(spare)
        to_read = [b for b in blocks if b not in futures]
        if to_read and hasattr(self.chunks, "fetch") and not self.chunks.files.local:
            # every file of the row in flight at once, on fsspec's loop; a decode task per chunk, queued now (the
            # squares' tasks after it wait only on tasks queued before them), waits for its own file alone
            fetched = self.chunks.fetch(to_read)
            futures |= {b: pool.submit(self._decode_fetched, b, f) for b, f in zip(to_read, fetched, strict=True)}
        else:
            futures |= {b: pool.submit(self.chunks.read, *b) for b in to_read}
        for b in to_read:
            if b in wanted_later:
                futures[b].add_done_callback(partial(self._keep_spare, b))
        return futures

    def _decode_fetched(self, block: tuple[int, int], fetched: Future) -> np.ndarray:
        return self.chunks.decode(*block, fetched.result())

    def _keep_spare(self, block: tuple[int, int], future: Any) -> None:
        if future.exception() is None:
            self.cache.put((self.key, "chunk", *block), future.result(), spare=True)

    # ------------------------------------------------------------------ per patch

    def _cut_one(self, index: int) -> np.ndarray:
        return self._cut(index, self._cached_chunk)

    def _cached_chunk(self, block: tuple[int, int]) -> np.ndarray:
        key = (self.key, "chunk", *block)
        chunk = self.cache.get(key)
        if chunk is None:
            chunk = self.chunks.read(*block)
            self.cache.put(key, chunk)
        return chunk

    # ------------------------------------------------------------------ both

    def _blocks(self, index: int) -> list[tuple[int, int]]:
        """The chunks (by, bx) that the square of ``index`` covers."""
        if self.off_level[index]:
            return []
        (r0, r1), (c0, c1) = self.rows[index].tolist(), self.cols[index].tolist()
        return [(by, bx) for by in range(r0, r1 + 1) for bx in range(c0, c1 + 1)]

    def _cut(self, index: int, chunk: Callable[[tuple[int, int]], np.ndarray]) -> np.ndarray:
        """The patch of ``index``: its square, pixels off the level :data:`FILL_VALUE`, resampled."""
        x0, y0 = (int(v) for v in self.origins[index])
        channels, height, width = self.chunks.shape
        inside = x0 >= 0 and y0 >= 0 and x0 + self.size <= width and y0 + self.size <= height
        square = np.empty((channels, self.size, self.size), dtype=np.uint8)
        if not inside:
            square.fill(FILL_VALUE)
        for by, bx in self._blocks(index):
            top, left = int(self.y_edges[by]), int(self.x_edges[bx])
            block = chunk((by, bx))
            sy0, sy1 = max(y0, top), min(y0 + self.size, top + block.shape[1])
            sx0, sx1 = max(x0, left), min(x0 + self.size, left + block.shape[2])
            square[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[
                :, sy0 - top : sy1 - top, sx0 - left : sx1 - left
            ]
        return resample(interleave(square), self.out_px, self.method)


class _Done(Future):
    """A future already holding ``value``."""

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.set_result(value)


class _InlineExecutor:
    """A ``submit`` that runs the call at once: with one thread, the band code stays the same without a pool."""

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except Exception as error:  # noqa: BLE001 - handed to the caller, as a pool's future does
            future.set_exception(error)
        return future


_INLINE = _InlineExecutor()


def _square_blocks(
    origins: np.ndarray, size: int, y_edges: np.ndarray, x_edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First and last chunk row and column under each square, (n, 2) each, and which squares miss the level."""
    height, width = int(y_edges[-1]), int(x_edges[-1])
    x0, y0 = origins[:, 0].astype(np.int64), origins[:, 1].astype(np.int64)
    ya, yb = np.clip(y0, 0, height - 1), np.clip(y0 + size, 1, height)
    xa, xb = np.clip(x0, 0, width - 1), np.clip(x0 + size, 1, width)
    rows = np.column_stack([np.searchsorted(y_edges, ya, "right"), np.searchsorted(y_edges, yb - 1, "right")]) - 1
    cols = np.column_stack([np.searchsorted(x_edges, xa, "right"), np.searchsorted(x_edges, xb - 1, "right")]) - 1
    off_level = (x0 + size <= 0) | (y0 + size <= 0) | (x0 >= width) | (y0 >= height)
    return rows, cols, off_level


def interleave(planes: np.ndarray) -> np.ndarray:
    """A contiguous (c, h, w) array as (h, w, c), with OpenCV's merge (a fifth of numpy's strided copy).

    Copying a square out of its chunks and merging the copy costs less than merging straight from the chunks.
    """
    import cv2

    if planes.shape[0] in (3, 4):
        return cv2.merge(list(planes))
    return np.ascontiguousarray(np.moveaxis(planes, 0, -1))


#: How patches are resampled (``PatchDataset(resample=...)``), see :func:`resample`.
RESAMPLE_METHODS = ("hest", "antialias")


def resample(square: np.ndarray, out_px: int, method: str = "hest") -> np.ndarray:
    """An (s, s, c) uint8 square as an (out_px, out_px, c) patch.

    ``"hest"``: ``cv2.resize`` of the square with OpenCV's default interpolation (``INTER_LINEAR``, no
    antialiasing), the call hestcore's ``WSIPatcher`` makes for every patch of HEST's h5: on the same square the
    result is HEST's patch bit for bit. A reduction by more than 2x samples the square rather than averaging it
    (aliasing), as HEST's patches do.

    ``"antialias"``: PIL's bilinear resize (a triangle filter whose support grows with the reduction). Smoother
    patches, but not HEST's: ~6-12x the CPU of ``"hest"`` at 415 -> 224 px.
    """
    side, _, channels = square.shape
    if side == out_px:
        return square
    if method == "hest":
        import cv2

        return cv2.resize(square, (out_px, out_px), interpolation=cv2.INTER_LINEAR).reshape(out_px, out_px, channels)
    if channels == 3:
        return np.asarray(Image.fromarray(square).resize((out_px, out_px), Image.BILINEAR))
    planes = [Image.fromarray(np.ascontiguousarray(square[..., c])) for c in range(channels)]
    return np.stack([np.asarray(p.resize((out_px, out_px), Image.BILINEAR)) for p in planes], axis=-1)
