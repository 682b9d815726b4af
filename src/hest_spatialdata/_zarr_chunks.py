"""Whole chunks of a store's image level, read as fast as the patch loaders need them.

zarr-python's read path costs ~2 ms of asyncio machinery per call, more than decoding a 512-px chunk (~1 ms), so
a loader decoding hundreds of chunks per epoch spends most of its time there. The stores this package writes have
the simplest zarr v3 layout (local files, regular chunk grid, ``default`` chunk keys, codecs ``bytes`` + ``zstd``,
uint8), and for exactly that layout :class:`RawChunks` reads a chunk's file and decodes it with numcodecs'
``Zstd``, as the zarr v3 specification defines it. Any other layout (another codec, sharding, a remote store) is
read through zarr itself (:class:`ZarrChunks`). ``tests/test_loaders.py`` checks both against zarr, chunk by chunk,
so a change of zarr's on-disk format fails loudly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

#: The only codec chain :class:`RawChunks` decodes (the one ``store.DEFAULT_RASTER_COMPRESSOR`` writes).
RAW_CODECS = ("bytes", "zstd")


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
    """Chunks of a local zarr v3 array with codecs ``bytes`` + ``zstd``, read as files and decoded by numcodecs.

    Use :func:`open_level`, which falls back to :class:`ZarrChunks` for any other layout.
    """

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        from numcodecs import Zstd

        self.folder = folder
        self.shape = tuple(meta["shape"])
        self.chunk_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.separator = meta["chunk_key_encoding"].get("configuration", {}).get("separator", "/")
        self.fill_value = meta.get("fill_value") or 0
        self._codec = Zstd()

    @classmethod
    def open(cls, folder: str | Path) -> RawChunks | None:
        """The reader of the array in ``folder``, or ``None`` if its layout is not the simple one."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "zarr.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        simple = (
            meta.get("zarr_format") == 3
            and meta.get("node_type") == "array"
            and meta.get("data_type") == "uint8"
            and len(meta.get("shape", ())) == 3
            and meta.get("chunk_grid", {}).get("name") == "regular"
            and meta.get("chunk_key_encoding", {}).get("name") == "default"
            and tuple(codec.get("name") for codec in meta.get("codecs", ())) == RAW_CODECS
            and not meta.get("storage_transformers")
        )
        if not simple or meta["chunk_grid"]["configuration"]["chunk_shape"][0] != meta["shape"][0]:
            return None
        return cls(folder, meta)

    def read(self, by: int, bx: int) -> np.ndarray:
        """Chunk (by, bx) along y and x, (c, h, w), cut to the array's edge (a missing chunk is the fill value)."""
        c, ch, cw = self.chunk_shape
        height = min(ch, self.shape[1] - by * ch)
        width = min(cw, self.shape[2] - bx * cw)
        key = self.folder / self.separator.join(("c", "0", str(by), str(bx)))
        try:
            encoded = key.read_bytes()
        except FileNotFoundError:
            return np.full((c, height, width), self.fill_value, dtype=np.uint8)
        block = np.frombuffer(self._codec.decode(encoded), dtype=np.uint8).reshape(c, ch, cw)
        return block[:, :height, :width]


def open_level(store: str | Path, image: str, level: int, shape: tuple[int, ...]) -> RawChunks | ZarrChunks | None:
    """The chunks of pyramid ``level`` of ``image`` in a store, or ``None`` if the store does not hold it as expected.

    The level's array is found through the OME-NGFF ``multiscales`` metadata of the image group (a public spec).

    Parameters
    ----------
    store
        The store's path.
    image
        The image element.
    level
        Pyramid level (0 = full resolution).
    shape
        The (c, y, x) shape the level must have (that of the element read by spatialdata).
    """
    import zarr

    group_path = Path(store) / "images" / image
    try:
        group = zarr.open_group(group_path, mode="r")
        ome = group.attrs.get("ome", group.attrs)
        path = ome["multiscales"][0]["datasets"][level]["path"]
        array = group[path]
    except (OSError, KeyError, IndexError, TypeError, ValueError):
        return None
    if not isinstance(array, zarr.Array) or tuple(array.shape) != tuple(shape):
        return None
    return RawChunks.open(group_path / path) or ZarrChunks(array)
