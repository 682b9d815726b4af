"""Write a multiscale image element straight from its pyramid levels: zarr arrays by a thread pool, then metadata.

spatialdata writes a lazy image through dask (one graph over every level, a task per chunk and ome-zarr's
``to_zarr``); for a whole-slide image that costs seconds over simply decoding each chunk's TIFF tiles and encoding
the chunk (``benchmarks/bench_wsi.py``). Here each task of a thread pool reads one block of a level (its tiles
decoded in that thread, the GIL released by the codecs) and assigns whole chunks to the zarr array, every level in
the same pool. The element's metadata is then written as spatialdata 0.8 writes it: the OME-NGFF 0.5
``multiscales`` (per-level scale and translation from the shapes, the element's coordinate systems), the ``omero``
channel labels and ``spatialdata_attrs`` (``tests/test_image_writer.py`` compares every attribute and array
metadata with a store written by spatialdata itself, so a change of spatialdata's format fails loudly).

Nothing here imports spatialdata, and the writer only needs a ``zarr.Group``: a local folder
(``zarr.storage.LocalStore``) or object storage (``zarr.storage.FsspecStore``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr

from hest_spatialdata.storage._zarr_layout import plain_zstd_layout

#: The formats spatialdata 0.8 writes for raster elements (``CurrentRasterFormat``); checked by the tests.
NGFF_VERSION = "0.5-dev-spatialdata"
SPATIALDATA_RASTER_VERSION = "0.3"
#: The ``image-label`` version spatialdata 0.8 gives a labels element.
LABELS_VERSION = "0.5"
AXES = ("c", "y", "x")


class Level(Protocol):
    """A pyramid level readable by blocks: ``level[y0:y1, x0:x1]`` is a ``(h, w, c)`` array.

    :class:`hest_spatialdata.readers.wsi.TiffLevel` (a slide's TIFF level) and a numpy array both qualify.
    """

    shape: tuple[int, ...]
    dtype: Any

    def __getitem__(self, key: Any) -> np.ndarray: ...


def image_codecs(raster_compressor: Mapping[str, int] | None) -> Any:
    """The zarr v3 ``compressors`` spatialdata 0.8 writes for its ``raster_compressor`` argument.

    Parameters
    ----------
    raster_compressor
        ``{"zstd": level}`` (plain zstd), ``{"lz4": level}`` (blosc-lz4) or ``None`` (zarr's default codec).

    Returns
    -------
    A list of one codec, or ``"auto"`` for zarr's default.
    """
    if not raster_compressor:
        return "auto"
    ((name, level),) = raster_compressor.items()
    if name == "zstd":
        return [zarr.codecs.ZstdCodec(level=level)]
    if name == "lz4":
        return [zarr.codecs.BloscCodec(cname="lz4", clevel=level)]
    raise ValueError(f"raster_compressor must be {{'zstd': level}} or {{'lz4': level}}, not {raster_compressor!r}")


class ImageWrite:
    """The arrays of one image being written by a thread pool (returned by :func:`start_image_write`).

    Call :meth:`result` to wait for them, or :meth:`cancel` to stop; both return only once no writer thread is left,
    so the store can be removed safely afterwards.
    """

    def __init__(self, executor: ThreadPoolExecutor, futures: list[Future[None]], stop: threading.Event) -> None:
        self._executor = executor
        self._futures = futures
        self._stop = stop

    def result(self) -> None:
        """Wait until every chunk is written; on the first failure, stop the others, wait for them, and raise it."""
        try:
            done, _ = wait(self._futures, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
        finally:
            self.cancel()  # a no-op once all are done; else nothing is left running on the way out

    def cancel(self) -> None:
        """Drop the chunks not started and wait for the running ones (idempotent)."""
        self._stop.set()
        self._executor.shutdown(wait=True, cancel_futures=True)


def start_image_write(
    group: zarr.Group,
    levels: Sequence[Level],
    *,
    chunk_size: int,
    raster_compressor: Mapping[str, int] | None = None,
    threads: int | None = None,
    block_size: int | None = None,
    on_block: Callable[[], None] | None = None,
) -> ImageWrite:
    """Create the arrays ``s0..sN`` of an image group and start writing them, every level at once, in threads.

    Parameters
    ----------
    group
        The image element's group (e.g. ``images/he`` of a store), empty.
    levels
        The pyramid levels, full resolution first, each ``(y, x, c)``; stored ``(c, y, x)``, pixel for pixel.
    chunk_size
        Chunk side (y and x) of the arrays; a multiple of the source's tiles reads each tile once.
    raster_compressor
        The codec, as spatialdata's ``raster_compressor`` (see :func:`image_codecs`).
    threads
        Writer threads; default one per core.
    block_size
        Side of the blocks one task reads at once (a multiple of ``chunk_size``), e.g. larger for a remote slide
        read by byte ranges, so that a block's rows of tiles are one request each; default ``chunk_size``.
    on_block
        Called (from a writer thread) after each block is written, e.g. to advance a progress bar.

    Returns
    -------
    The running write: call :meth:`ImageWrite.result` (or :meth:`ImageWrite.cancel`).
    """
    block_size = block_size or chunk_size
    if block_size % chunk_size:
        raise ValueError(f"block_size ({block_size}) must be a multiple of chunk_size ({chunk_size})")
    codecs = image_codecs(raster_compressor)
    tasks = []
    for k, level in enumerate(levels):
        h, w, c = level.shape
        array = group.create_array(
            f"s{k}",
            shape=(c, h, w),
            chunks=(c, min(chunk_size, h), min(chunk_size, w)),  # as dask chunks a level smaller than a chunk
            dtype=level.dtype,
            compressors=codecs,
            fill_value=0,
            dimension_names=AXES,
        )
        tasks += [(level, array, y, x) for y in range(0, h, block_size) for x in range(0, w, block_size)]
    stop = threading.Event()
    executor = ThreadPoolExecutor(threads or os.cpu_count() or 1, thread_name_prefix="image-writer")

    writers = {id(array): ChunkFiles.of(array) for _, array, _, _ in tasks}

    def write_block(level: Level, array: zarr.Array, y0: int, x0: int) -> None:
        if stop.is_set():  # another block failed or the write was cancelled
            return
        block = level[y0 : y0 + block_size, x0 : x0 + block_size]
        files = writers[id(array)]
        if files is None:
            array[:, y0 : y0 + block.shape[0], x0 : x0 + block.shape[1]] = block.transpose(2, 0, 1)
        else:
            files.write_block(block, y0, x0)
        if on_block is not None:
            on_block()

    try:
        futures = [executor.submit(write_block, *task) for task in tasks]
    except BaseException:
        stop.set()
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    return ImageWrite(executor, futures, stop)


class ChunkFiles:
    """Whole chunks of a local zarr v3 array with codecs ``bytes`` + ``zstd``, encoded and written as files.

    zarr-python spends ~4 ms of its I/O thread per chunk (a 32k slide has ~1,400 chunks) on top of the encoding,
    serialised on its event loop; for this one simple layout, what zarr writes is defined by the zarr v3
    specification: the chunk's C-order little-endian bytes (padded with the fill value at the array's edge)
    compressed by numcodecs' ``Zstd`` (which zarr's ``ZstdCodec`` calls), at the key the array's chunk key encoding
    gives, and no file for a chunk that is all fill value. ``tests/test_image_writer.py`` compares the stores byte
    for byte with spatialdata's own write (images and labels), so a change of zarr's format fails loudly. Use
    :meth:`of`.
    """

    def __init__(self, array: zarr.Array, folder: Path, level: int, checksum: bool) -> None:
        from numcodecs import Zstd

        self._array = array
        self._folder = folder
        self._codec = Zstd(level=level, checksum=checksum)
        self._chunk: tuple[int, ...] = tuple(array.chunks)
        self._fill = array.metadata.fill_value

    @classmethod
    def of(cls, array: zarr.Array) -> ChunkFiles | None:
        """The writer of ``array``, or ``None`` when its layout is not the simple one (zarr writes it then)."""
        meta = array.metadata.to_dict()
        if not (isinstance(array.store, zarr.storage.LocalStore) and plain_zstd_layout(meta)):
            return None
        if np.dtype(array.dtype).byteorder == ">":
            return None
        zstd = array.metadata.codecs[1]
        return cls(array, Path(array.store.root) / array.path, zstd.level, zstd.checksum)

    def write_block(self, block: np.ndarray, y0: int, x0: int) -> None:
        """Write the chunks of a ``(h, w, c)`` block of a ``(c, y, x)`` array, its corner ``(y0, x0)`` on the grid."""
        c, ch, cw = self._chunk
        for y in range(0, block.shape[0], ch):
            for x in range(0, block.shape[1], cw):
                part = block[y : y + ch, x : x + cw]
                chunk = np.full((c, ch, cw), self._fill, dtype=self._array.dtype)
                chunk[:, : part.shape[0], : part.shape[1]] = part.transpose(2, 0, 1)
                self.write_chunk((0, (y0 + y) // ch, (x0 + x) // cw), chunk)

    def write_part(self, part: np.ndarray, coords: tuple[int, ...]) -> None:
        """Write chunk ``coords`` from ``part``, the array's values there (smaller than a chunk at the array's edge)."""
        if part.shape != self._chunk:
            chunk = np.full(self._chunk, self._fill, dtype=self._array.dtype)
            chunk[tuple(slice(0, n) for n in part.shape)] = part
            part = chunk
        self.write_chunk(coords, np.ascontiguousarray(part, dtype=self._array.dtype))

    def write_chunk(self, coords: tuple[int, ...], chunk: np.ndarray) -> None:
        """Write a whole chunk (C-contiguous, the chunk's shape) at its grid ``coords``."""
        path = self._folder / self._array.metadata.encode_chunk_key(coords)
        if not chunk.any() if self._fill == 0 else (chunk == self._fill).all():
            return  # zarr writes no chunk that is all fill value
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self._codec.encode(chunk))


def write_image_metadata(
    group: zarr.Group,
    shapes: Sequence[tuple[int, ...]],
    *,
    channels: Sequence[str],
    coordinate_systems: Mapping[str, tuple[float, float] | None],
) -> None:
    """Write the attributes of a multiscale image group exactly as spatialdata 0.8 does.

    Parameters
    ----------
    group
        The image element's group, holding the arrays ``s0..sN``.
    shapes
        The ``(c, y, x)`` shape of every level, full resolution first.
    channels
        The channel names (``c`` coordinate).
    coordinate_systems
        For each coordinate system, the transformation from level-0 pixels: ``None`` for the identity, or the
        ``(y, x)`` factors of a scale (e.g. µm per pixel).
    """
    group.attrs.put(image_attrs(group.name, shapes, channels=channels, coordinate_systems=coordinate_systems))


def image_attrs(
    name: str,
    shapes: Sequence[tuple[int, ...]],
    *,
    channels: Sequence[str] | None,
    coordinate_systems: Mapping[str, tuple[float, float] | None],
) -> dict[str, Any]:
    """The attributes of :func:`write_image_metadata` for the group at ``name`` (e.g. ``"/images/he"``).

    ``channels=None`` gives a labels element's attributes: axes ``(y, x)``, no channels, ``image-label``.
    """
    axes = AXES if channels is not None else AXES[1:]
    multiscale = {
        "datasets": [
            {"path": f"s{k}", "coordinateTransformations": transforms}
            for k, transforms in enumerate(_level_transformations(shapes))
        ],
        "name": name.rpartition("/")[2] if channels is None else name,
        "axes": [_axis(a) for a in axes],
        "coordinateTransformations": [_transformation(cs, scale, axes) for cs, scale in coordinate_systems.items()],
    }
    ome: dict[str, Any] = {"version": NGFF_VERSION, "multiscales": [multiscale]}
    if channels is None:
        ome["image-label"] = {"version": LABELS_VERSION}
    else:
        ome["omero"] = {"channels": [{"label": c} for c in channels]}
    return {"ome": ome, "spatialdata_attrs": {"version": SPATIALDATA_RASTER_VERSION}}


def _level_transformations(shapes: Sequence[tuple[int, ...]]) -> list[list[dict[str, Any]]]:
    # ome-zarr's rule: each level's scale is level 0's shape over its own, shifted by half a pixel of the change.
    full = shapes[0]
    out = []
    for shape in shapes:
        scale = [f / s for f, s in zip(full, shape, strict=True)]
        out.append(
            [
                {"type": "scale", "scale": scale},
                {"type": "translation", "translation": [s / 2 - 0.5 for s in scale]},
            ]
        )
    return out


def _axis(name: str, *, unit: bool = False) -> dict[str, str]:
    if name == "c":
        return {"name": name, "type": "channel"}
    return {"name": name, "type": "space", "unit": "unit"} if unit else {"name": name, "type": "space"}


def _transformation(system: str, scale: tuple[float, float] | None, axes: Sequence[str] = AXES) -> dict[str, Any]:
    described = [_axis(a, unit=True) for a in axes]
    ends = {"input": {"name": "".join(axes), "axes": described}, "output": {"name": system, "axes": described}}
    if scale is None:
        return {"type": "identity"} | ends
    return {"type": "scale", "scale": [1.0] * (len(axes) - 2) + [float(scale[0]), float(scale[1])]} | ends
