"""Cutting and resampling patches from a pyramid level's chunks, for :class:`~hest_spatialdata.loaders.PatchDataset`.

Two ways of working, chosen per dataset:

- **per patch**: a patch reads the chunks it covers (kept in a bounded :class:`ChunkCache`) and is resampled.
  Neighbouring patches share chunks, so the cache saves decoding; but at 0.27 µm/px a 224-px patch at 0.5 µm/px
  covers ~0.5 MB of level-0 pixels, and a shuffled epoch over several slides needs more decoded chunks than a
  cache of reasonable size holds, so most chunks are decoded several times per epoch;
- **by band** (``read_ahead``): the first patch asked of a band of chunk rows cuts every patch of that band at once
  (its chunks decoded once, concurrently, in a thread pool; the patches resampled in the same pool) and keeps the
  finished patches in the cache. A finished 224-px patch takes 150 KB against ~530 KB of decoded chunks under it,
  so the cache holds a whole cohort's patches where it would not hold their chunks; the first epoch decodes each
  chunk about once and the next ones only copy patches out.

Resampling (:func:`resample`) is by default HEST's own: OpenCV's ``cv2.resize`` with its default bilinear
interpolation, as hestcore's ``WSIPatcher`` makes the patches of HEST's h5; a level that already has the asked
resolution is only cut.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

#: Value of the pixels of a patch that lie off the slide (black, as HEST's OpenSlide crops).
FILL_VALUE = 0

#: Chunk rows per band (``read_ahead``): each band decodes its rows plus part of the next one.
BAND_ROWS = 2

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


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

    One per :class:`~hest_spatialdata.loaders.PatchDataset` by default; a cohort passes one to all its stores'
    datasets, so that the memory bound holds for the whole cohort. Safe to use from several threads.

    Parameters
    ----------
    max_bytes
        Memory for the arrays (0: keep nothing).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> np.ndarray | None:
        """The array under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            block = self._items.get(key)
            if block is not None:
                self._items.move_to_end(key)
            return block

    def put(self, key: tuple[Any, ...], block: np.ndarray) -> None:
        """Keep ``block``, dropping the least recently used arrays past the budget."""
        if self.max_bytes <= 0:
            return
        with self._lock:
            previous = self._items.pop(key, None)
            self.nbytes += block.nbytes - (previous.nbytes if previous is not None else 0)
            self._items[key] = block
            while self.nbytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self.nbytes -= evicted.nbytes

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

    def read_many(self, blocks: list[tuple[int, int]]) -> list[np.ndarray]:
        return [self.read(by, bx) for by, bx in blocks]


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
        top = np.clip(self.origins[:, 1], 0, chunks.shape[1] - 1)
        # bands of BAND_ROWS chunk rows, by the row of each square's top: a square reaches into the next row below
        # (~40 % of them at 415 px in 1024-px chunks), so wider bands decode fewer chunks twice
        self.band_of = (np.searchsorted(self.y_edges, top, "right") - 1) // BAND_ROWS
        self._band_lock = threading.Lock()
        self._band_locks: dict[int, threading.Lock] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_band_lock"], state["_band_locks"]  # a DataLoader worker gets its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._band_lock, self._band_locks = threading.Lock(), {}

    def patches(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Patches of ``indices`` (each (out_px, out_px, 3) uint8, a fresh array)."""
        found = {i: self.cache.get((self.key, "patch", i)) for i in set(indices)} if self.read_ahead else {}
        missing = sorted(i for i, patch in found.items() if patch is None) if self.read_ahead else sorted(set(indices))
        if self.read_ahead:
            for band in sorted({int(self.band_of[i]) for i in missing}):
                found.update(self._cut_band(band, missing))
        else:
            found.update(zip(missing, parallel_map(thread_pool(self.threads), self._cut_one, missing), strict=True))
        return [found[i].copy() if self.read_ahead else found[i] for i in indices]

    # ------------------------------------------------------------------ by band

    def _cut_band(self, band: int, wanted: list[int]) -> dict[int, np.ndarray]:
        with self._band_lock:
            lock = self._band_locks.setdefault(band, threading.Lock())
        with lock:  # two threads asking one band: the second finds the first's patches
            members = np.flatnonzero(self.band_of == band).tolist()
            done = {i: p for i in members if (p := self.cache.get((self.key, "patch", i))) is not None}
            todo = [i for i in members if i not in done]
            if todo:
                blocks = sorted({b for i in todo for b in self._blocks(i)})
                pool = thread_pool(self.threads)
                decoded = dict(zip(blocks, self._read_blocks(pool, blocks), strict=True))
                cut = parallel_map(pool, lambda i: self._cut(i, decoded.__getitem__), todo)
                for i, patch in zip(todo, cut, strict=True):
                    self.cache.put((self.key, "patch", i), patch)
                    done[i] = patch
        return {i: done[i] for i in wanted if i in done}

    def _read_blocks(self, pool: ThreadPoolExecutor | None, blocks: list[tuple[int, int]]) -> list[np.ndarray]:
        if hasattr(self.chunks, "files") and not self.chunks.files.local:  # remote: one concurrent fetch
            return self.chunks.read_many(blocks)
        return parallel_map(pool, lambda b: self.chunks.read(*b), blocks)

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
        x0, y0 = (int(v) for v in self.origins[index])
        _, height, width = self.chunks.shape
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + self.size, width), min(y0 + self.size, height)
        if xb <= xa or yb <= ya:
            return []
        return [(by, bx) for by in _block_range(self.y_edges, ya, yb) for bx in _block_range(self.x_edges, xa, xb)]

    def _cut(self, index: int, chunk: Callable[[tuple[int, int]], np.ndarray]) -> np.ndarray:
        """The patch of ``index``: its square (c, y, x), pixels off the level :data:`FILL_VALUE`, resampled."""
        x0, y0 = (int(v) for v in self.origins[index])
        _, height, width = self.chunks.shape
        inside = x0 >= 0 and y0 >= 0 and x0 + self.size <= width and y0 + self.size <= height
        square = np.empty((self.chunks.shape[0], self.size, self.size), dtype=np.uint8)
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
        return resample(square, self.out_px, self.method)


#: How patches are resampled (``PatchDataset(resample=...)``), see :func:`resample`.
RESAMPLE_METHODS = ("hest", "antialias")


def resample(square: np.ndarray, out_px: int, method: str = "hest") -> np.ndarray:
    """A (c, s, s) uint8 square as an (out_px, out_px, c) patch.

    ``"hest"``: ``cv2.resize`` of the (s, s, c) image with OpenCV's default interpolation (``INTER_LINEAR``, no
    antialiasing), the call hestcore's ``WSIPatcher`` makes for every patch of HEST's h5: on the same square the
    result is HEST's patch bit for bit. A reduction by more than 2x samples the square rather than averaging it
    (aliasing), as HEST's patches do.

    ``"antialias"``: PIL's bilinear resize of each channel plane (a triangle filter whose support grows with the
    reduction; identical to PIL's resize of the RGB image). Smoother patches, but not HEST's: ~6-12x the CPU of
    ``"hest"`` at 415 -> 224 px.
    """
    channels, side, _ = square.shape
    if side == out_px:
        return np.ascontiguousarray(square.transpose(1, 2, 0))
    if method == "hest":
        import cv2

        image = cv2.merge(list(square))
        return cv2.resize(image, (out_px, out_px), interpolation=cv2.INTER_LINEAR).reshape(out_px, out_px, channels)
    out = np.empty((out_px, out_px, channels), dtype=np.uint8)
    for c in range(channels):
        out[..., c] = np.asarray(Image.fromarray(square[c]).resize((out_px, out_px), Image.BILINEAR))
    return out


def _block_range(edges: np.ndarray, start: int, stop: int) -> range:
    """Indices of the chunks along one axis that ``[start, stop)`` touches."""
    return range(int(np.searchsorted(edges, start, "right")) - 1, int(np.searchsorted(edges, stop - 1, "right")))
