"""Write a lazy multiscale labels element (``nuclei_labels``) chunk by chunk in threads, then its metadata.

spatialdata writes a labels element through ome-zarr's ``to_zarr``: about 10 ms per chunk of zarr-python's I/O
and of graph work on top of drawing and encoding the chunk, level after level, so a slide's labels pyramid
(thousands of 1024-px chunks) costs more than drawing it. Here ``dask.array.store`` computes every level in one graph,
and each block (one chunk) is written as one chunk file (:class:`hest_spatialdata.writer.image.ChunkFiles`, or by
zarr for another store or codec); the metadata is then written as spatialdata 0.8 writes it
(``tests/test_image_writer.py`` compares every file with a store spatialdata wrote itself).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError
from typing import Any

import numpy as np
import zarr

from hest_spatialdata.writer.image import AXES, ChunkFiles, image_attrs, image_codecs

LABEL_AXES = AXES[1:]


def write_labels(
    root: zarr.Group,
    name: str,
    levels: Sequence[Any],
    *,
    coordinate_systems: Mapping[str, tuple[float, float] | None],
    raster_compressor: Mapping[str, int] | None = None,
    threads: int | None = None,
    stop: threading.Event | None = None,
) -> Callable[[], None]:
    """Create the labels element ``labels/{name}`` of a store; the returned call draws and writes its chunks.

    The groups, the arrays ``s0..sN`` and the metadata are written here, as spatialdata writes them, so that the
    chunks can be written in another thread while other elements are written: no metadata document is shared.

    Parameters
    ----------
    root
        The store's root group.
    name
        The element's name.
    levels
        The pyramid levels, full resolution first: 2-D dask arrays ``(y, x)`` with regular chunks (each level's
        chunks are the stored chunks).
    coordinate_systems
        For each coordinate system, the transformation from level-0 pixels: ``None`` for the identity, or the
        ``(y, x)`` factors of a scale.
    raster_compressor
        The codec, as spatialdata's ``raster_compressor``.
    threads
        Threads computing the chunks; default one per core.
    stop
        Once set, the chunk writing stops at the next chunk (with :class:`concurrent.futures.CancelledError`).

    Returns
    -------
    The call that computes and writes every chunk (every level in one dask graph).
    """
    import dask.array as da

    labels = root.require_group("labels")
    element = labels.create_group(name)
    codecs = image_codecs(raster_compressor)
    targets = []
    for k, level in enumerate(levels):
        array = element.create_array(
            f"s{k}", shape=level.shape, chunks=tuple(c[0] for c in level.chunks), dtype=level.dtype,
            compressors=codecs, fill_value=0, dimension_names=LABEL_AXES,
        )  # fmt: skip
        targets.append(_ChunkTarget(array, stop))
    element.attrs.put(image_attrs(element.name, [a.shape for a in levels], channels=None,
                                  coordinate_systems=coordinate_systems))  # fmt: skip
    names = dict(labels.attrs).get("ome", {}).get("labels", [])
    labels.attrs.put({"ome": {"labels": [*names, name]}})

    def write_chunks() -> None:
        # one graph for every level: the threads draw and write chunks without waiting for a level to finish
        da.store(list(levels), targets, lock=False, scheduler="threads", num_workers=threads or os.cpu_count() or 1)

    return write_chunks


class _ChunkTarget:
    """``da.store``'s target for one level: each block (one chunk) written as a chunk file (or by zarr)."""

    def __init__(self, array: zarr.Array, stop: threading.Event | None) -> None:
        self.array, self.files, self.stop = array, ChunkFiles.of(array), stop

    def __setitem__(self, key: tuple[slice, ...], values: np.ndarray) -> None:
        if self.stop is not None and self.stop.is_set():
            raise CancelledError("the conversion stopped")
        if self.files is None:
            self.array[key] = values
            return
        coords = tuple(s.start // c for s, c in zip(key, self.array.chunks, strict=True))
        self.files.write_part(np.asarray(values), coords)
