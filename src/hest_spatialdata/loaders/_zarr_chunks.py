"""Whole chunks of a store's image level, read as fast as the patch loaders need them, locally or remotely.

zarr-python's read path costs ~2 ms of asyncio machinery per call, more than decoding a 512-px chunk (~1 ms), so
a loader decoding hundreds of chunks per epoch spends most of its time there. The stores this package writes have
the simplest zarr v3 layout (regular chunk grid, ``default`` chunk keys, codecs ``bytes`` + ``zstd``, uint8), and
for exactly that layout :class:`RawChunks` reads a chunk's file (a local read, or one GET through fsspec for a store
at a URL) and decodes it with numcodecs' ``Zstd``, as the zarr v3 specification defines it. Any other layout (another
codec, sharding) is read through zarr itself (:class:`ZarrChunks`). ``tests/test_zarr_chunks.py`` checks both
against zarr, chunk by chunk, so a change of zarr's on-disk format fails loudly.

Chunks are returned as stored, (c, h, w): the loaders cut and resample each channel plane without a transposed copy.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import numpy as np

from hest_spatialdata.storage._parts import ImageLevel, StoreFiles
from hest_spatialdata.storage._zarr_layout import simple_layout


class ZarrChunks:
    """Chunks of a (c, y, x) zarr array, read with zarr-python."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.chunk_shape = tuple(array.chunks)

    def read(self, by: int, bx: int) -> np.ndarray:
        """Chunk (by, bx) along y and x, (c, h, w), cut to the array's edge."""
        _, ch, cw = self.chunk_shape
        return np.asarray(self.array[:, by * ch : (by + 1) * ch, bx * cw : (bx + 1) * cw])


class RawChunks:
    """Chunks of a zarr v3 array with codecs ``bytes`` + ``zstd``, read as files and decoded by numcodecs.

    Use :func:`open_level`, which falls back to :class:`ZarrChunks` for any other layout.
    """

    def __init__(self, files: StoreFiles, key: str, meta: dict[str, Any]) -> None:
        from numcodecs import Zstd

        self.files, self.key = files, key
        self.shape = tuple(meta["shape"])
        self.chunk_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.separator = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
        self.fill_value = meta.get("fill_value") or 0
        self._codec = Zstd()

    @staticmethod
    def simple(meta: dict[str, Any]) -> bool:
        """Whether an array's ``zarr.json`` has the one layout :class:`RawChunks` decodes (:func:`simple_layout`)."""
        return simple_layout(meta)

    def chunk_key(self, by: int, bx: int) -> str:
        """The key of chunk (by, bx) in the store."""
        return f"{self.key}/" + self.separator.join(("c", "0", str(by), str(bx)))

    def decode(self, by: int, bx: int, encoded: bytes | None) -> np.ndarray:
        """Chunk (by, bx) from its file's bytes (``None``: a chunk zarr did not write, all fill value)."""
        c, ch, cw = self.chunk_shape
        height = min(ch, self.shape[1] - by * ch)
        width = min(cw, self.shape[2] - bx * cw)
        if encoded is None:
            return np.full((c, height, width), self.fill_value, dtype=np.uint8)
        block = np.frombuffer(self._codec.decode(encoded), dtype=np.uint8).reshape(c, ch, cw)
        return block[:, :height, :width]

    def read(self, by: int, bx: int) -> np.ndarray:
        """Chunk (by, bx) along y and x, (c, h, w), cut to the array's edge (a missing chunk is the fill value)."""
        try:
            encoded = self.files.read_bytes(self.chunk_key(by, bx))
        except FileNotFoundError:
            encoded = None
        return self.decode(by, bx, encoded)

    def fetch(self, blocks: list[tuple[int, int]]) -> list[Future[bytes | None]]:
        """Start fetching the files of several chunks: a future per chunk, its encoded bytes for :meth:`decode`."""
        return self.files.fetch([self.chunk_key(by, bx) for by, bx in blocks])


def open_level(files: StoreFiles, level: ImageLevel) -> RawChunks | ZarrChunks | None:
    """The chunks of a pyramid level, or ``None`` if the store does not hold it as its ``zarr.json`` says.

    Parameters
    ----------
    files
        The store.
    level
        The level (from :func:`hest_spatialdata.storage._parts.image_levels`).
    """
    try:
        meta = files.json(f"{level.key}/zarr.json")
    except (OSError, ValueError):
        return None
    if tuple(meta.get("shape", ())) != tuple(level.shape):
        return None
    if RawChunks.simple(meta):
        return RawChunks(files, level.key, meta)
    import zarr

    group, _, name = level.key.rpartition("/")
    try:
        array = files.zarr_group(group)[name]
    except (OSError, KeyError, ValueError):
        return None
    return ZarrChunks(array) if isinstance(array, zarr.Array) else None
