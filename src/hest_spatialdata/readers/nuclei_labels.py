"""The ``nuclei_labels`` element: the CellViT nuclei rasterised as a multiscale labels image.

napari draws a labels pyramid (outlines with ``contour``) at any nucleus count in the time it takes to read the
tiles on screen, where a Shapes layer of 300k polygons takes minutes to build; squidpy and napari-spatialdata use
labels too. The labels are made from the ``nuclei`` polygons, never stored instead of them:

- label id = the nucleus' ``cell_id`` (the index of ``nuclei``, ``0..n-1`` in HEST) + 1, ``0`` being background
  (:data:`LABEL_ID_RULE`, also in ``attrs["hest"]["nuclei_labels"]``; :func:`label_ids`), so a nucleus keeps its
  label in any crop of the store; a non-integer index falls back to the row position + 1;
- level 0 covers the slide pixel for pixel (``global`` = level-0 px), each further level halves it, down to one
  chunk; every level is rasterised from the polygons at its own scale (no nearest-neighbour subsampling, so small
  nuclei stay visible as dots on the overview), where overlapping nuclei, later rows win;
- lazily, one dask task per chunk drawing only the nuclei whose bounds meet the chunk, with scikit-image's polygon
  fill rule (the pixels whose centre is inside; a nucleus with no pixel in the chunk is a dot at its vertices'
  mean, clipped to the chunk), compiled for all of a chunk's nuclei at once (:mod:`._polyfill`), so memory stays
  at a few chunks whatever the slide size.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import dask.array as da
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from spatialdata.models import Labels2DModel
from spatialdata.models.pyramids_utils import dask_arrays_to_datatree
from spatialdata.transformations import set_transformation
from xarray import DataTree

from hest_spatialdata.readers._context import SampleContext

#: How label ids map to the rows of ``nuclei`` (written into ``attrs["hest"]["nuclei_labels"]``).
LABEL_ID_RULE = "cell_id (the index of nuclei) + 1; 0 is background"
#: Levels are added until the coarsest fits in this many pixels on its longer side.
COARSEST_LEVEL_PX = 1024


def rasterise_nuclei(nuclei: gpd.GeoDataFrame, ctx: SampleContext) -> DataTree:
    """The nuclei as a lazy multiscale ``nuclei_labels`` element.

    Parameters
    ----------
    nuclei
        The ``nuclei`` element (polygons in level-0 px).
    ctx
        The sample's context (slide shape, chunk size, transformations).

    Returns
    -------
    A Labels2DModel DataTree ``scale0..scaleN``, uint32, dims ``(y, x)``, in ``global`` and ``microns``.
    """
    levels = nuclei_label_levels(nuclei.geometry.to_numpy(), label_ids(nuclei), ctx.slide_shape, ctx.chunk_size)
    labels = dask_arrays_to_datatree(levels, dims=("y", "x"))
    set_transformation(labels, ctx.transformations(), set_all=True)
    Labels2DModel().validate(labels)
    return labels


def label_ids(nuclei: gpd.GeoDataFrame) -> np.ndarray:
    """The label id of each nucleus: its ``cell_id`` + 1 (its row position + 1 for a non-integer index)."""
    index = nuclei.index
    if pd.api.types.is_integer_dtype(index.dtype) and (len(index) == 0 or index.min() >= 0):
        return index.to_numpy(np.int64) + 1
    return np.arange(1, len(nuclei) + 1)


def nuclei_label_levels(
    geometry: np.ndarray, ids: np.ndarray, slide_shape: tuple[int, int], chunk_size: int
) -> list[da.Array]:
    """The levels of the labels pyramid of ``geometry`` (polygons in level-0 px), lazy, level 0 first.

    Parameters
    ----------
    geometry
        The nuclei polygons (or multipolygons: the largest part is drawn), in row order.
    ids
        Their label ids (:func:`label_ids`).
    slide_shape
        ``(height, width)`` of level 0.
    chunk_size
        Chunk side in pixels.

    Returns
    -------
    One uint32 dask array per level of :func:`level_shapes`.
    """
    polygons = _Polygons(geometry, np.asarray(ids, np.uint32))
    return [_level(polygons, shape, 2**k, chunk_size) for k, shape in enumerate(level_shapes(slide_shape))]


def level_shapes(slide_shape: tuple[int, int]) -> list[tuple[int, int]]:
    """``(height, width)`` of each level: level 0 is the slide, each next one half of it (rounded down)."""
    shapes = [tuple(int(s) for s in slide_shape)]
    while max(shapes[-1]) > COARSEST_LEVEL_PX and min(shapes[-1]) >= 2:
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
    return shapes  # type: ignore[return-value]


class _Polygons:
    """The nuclei's outer rings as flat coordinates, with the rings each chunk of a level draws.

    Everything is prepared by the first chunk drawn (in a writer thread), not when the element is made: reading a
    sample costs no rasterisation, and the compiled fill (numba) is imported only when labels are drawn.
    """

    def __init__(self, geometry: np.ndarray, ids: np.ndarray) -> None:
        self.geometry, self.ids = geometry, ids
        self._lock = threading.Lock()
        self._rings: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._hits: dict[tuple[tuple[int, int], int, int], _ChunkHits] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"geometry": self.geometry, "ids": self.ids}  # prepared again where it is drawn (a dask worker)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["geometry"], state["ids"])

    def draw(self, y0: int, x0: int, shape: tuple[int, int], level: tuple[tuple[int, int], int, int]) -> np.ndarray:
        """Chunk ``shape`` at ``(y0, x0)`` of the level ``(level shape, factor, chunk size)``."""
        from hest_spatialdata.readers._polyfill import draw_chunk

        coords, starts, hits = self._chunk_hits(level)
        _, factor, _ = level
        return draw_chunk(coords, starts, self.ids, hits.of(y0, x0), (y0, x0, *shape), factor)

    def _chunk_hits(self, level: tuple[tuple[int, int], int, int]) -> tuple[np.ndarray, np.ndarray, _ChunkHits]:
        with self._lock:
            if self._rings is None:
                coords, starts = _outer_ring_coords(self.geometry)
                self._rings = (coords, starts, *_ring_bounds(coords, starts))
            coords, starts, lower, upper = self._rings
            if level not in self._hits:
                self._hits[level] = _ChunkHits(lower, upper, *level)
            return coords, starts, self._hits[level]


class _ChunkHits:
    """For each chunk of a level, the rings whose bounds meet its window (edges included), in row order.

    The same rings as a query of the window's box in a ``shapely.STRtree`` of the rings' bounds (the same float
    comparisons), found for all chunks at once by sorting each ring into the chunks its bounds span: the chunk grid is
    regular, so no tree is needed, and no per-chunk query.
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, shape: tuple[int, int], factor: int, chunk: int) -> None:
        height, width = shape
        self.chunks_x = -(-width // chunk)
        (y_first, y_last), (x_first, x_last) = (
            _spans(lower[:, axis], upper[:, axis], size, chunk, factor) for axis, size in ((1, height), (0, width))
        )
        columns = np.maximum(x_last - x_first + 1, 0)
        counts = np.where(y_last >= y_first, (y_last - y_first + 1) * columns, 0)
        ring = np.repeat(np.arange(len(counts)), counts)
        k = np.arange(len(ring)) - np.repeat(np.cumsum(counts) - counts, counts)  # position in the ring's chunks
        per_row = np.repeat(columns, counts)
        chunk_index = (
            (np.repeat(y_first, counts) + k // per_row) * self.chunks_x + np.repeat(x_first, counts) + k % per_row
        )
        order = np.argsort(chunk_index, kind="stable")  # stable: rings stay in row order within a chunk
        self.rings = ring[order]
        self.offsets = np.searchsorted(chunk_index[order], np.arange(-(-height // chunk) * self.chunks_x + 1))
        self.chunk = chunk

    def of(self, y0: int, x0: int) -> np.ndarray:
        """The rings to draw in the chunk whose corner is ``(y0, x0)`` (level px)."""
        index = (y0 // self.chunk) * self.chunks_x + x0 // self.chunk
        return self.rings[self.offsets[index] : self.offsets[index + 1]]


def _spans(low: np.ndarray, high: np.ndarray, size: int, chunk: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last chunk along one axis whose window ``[start, end]`` (level-0 px) meets ``[low, high]``."""
    starts = np.arange(0, size, chunk) * factor
    ends = np.minimum(np.arange(chunk, size + chunk, chunk), size)[: len(starts)] * factor
    return np.searchsorted(ends, low, "left"), np.searchsorted(starts, high, "right") - 1


def _level(polygons: _Polygons, shape: tuple[int, int], factor: int, chunk_size: int) -> da.Array:
    template = da.empty(shape, dtype=np.uint32, chunks=chunk_size)
    # a name of our own: dask would otherwise tokenize (pickle) every polygon to name the task
    name = f"nuclei-labels-{factor}-{uuid.uuid4().hex}"
    meta = np.empty((0, 0), np.uint32)
    level = (tuple(shape), factor, chunk_size)
    return template.map_blocks(_draw_block, polygons, level, dtype=np.uint32, meta=meta, name=name)


def _draw_block(
    block: np.ndarray, polygons: _Polygons, level: tuple[tuple[int, int], int, int], block_info: Any = None
) -> np.ndarray:
    (y0, _), (x0, _) = block_info[0]["array-location"] if block_info else ((0, 0), (0, 0))
    return polygons.draw(y0, x0, block.shape, level)


def _ring_bounds(coords: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corner of each ring's bounds; an empty ring gets bounds no window meets."""
    counts = np.diff(starts)
    lower = np.full((len(counts), 2), np.inf)
    upper = np.full((len(counts), 2), -np.inf)
    filled = counts > 0
    if filled.any():
        lower[filled] = np.minimum.reduceat(coords, starts[:-1][filled])
        upper[filled] = np.maximum.reduceat(coords, starts[:-1][filled])
    return lower, upper


def _outer_ring_coords(geometry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of each nucleus' outer ring (a MultiPolygon's largest part; holes are not drawn), flat.

    Returns ``coords`` (``(n_vertices, 2)`` float64) and ``starts``: ring ``k`` is ``coords[starts[k]:starts[k + 1]]``.
    """
    polygons = shapely.get_type_id(geometry) == shapely.GeometryType.POLYGON
    if polygons.all() and not shapely.get_num_interior_rings(geometry).any():
        # polygons without holes (HEST's CellViT): their vertices are their outer rings', no geometry copied
        starts = np.concatenate([[0], np.cumsum(shapely.get_num_coordinates(geometry))])
        return shapely.get_coordinates(geometry), starts
    parts, owner = shapely.get_parts(geometry, return_index=True)  # a missing or empty geometry has none
    largest = np.lexsort((-shapely.area(parts), owner))
    largest = largest[np.r_[True, owner[largest][1:] != owner[largest][:-1]]] if len(largest) else largest
    coords, part = shapely.get_coordinates(shapely.get_exterior_ring(parts[largest]), return_index=True)
    # ring k is geometry k's, whatever geometries have no part (an empty ring: nothing drawn)
    return coords, np.searchsorted(owner[largest][part], np.arange(len(geometry) + 1))


def class_outlines(labels: da.Array, label_classes: np.ndarray) -> da.Array:
    """The outline of each nucleus of a labels level, valued by its class (for display).

    Parameters
    ----------
    labels
        One level of ``nuclei_labels`` (or of :func:`rasterise_nuclei`).
    label_classes
        uint8 lookup: the value shown for each label id (``label_classes[0] == 0``, background).

    Returns
    -------
    A lazy uint8 array: ``label_classes[id]`` on the pixels of a nucleus that touch another label (4-neighbours),
    0 elsewhere. A colormap of a few entries then colours hundreds of thousands of nuclei by class.
    """
    meta = np.empty((0, 0), np.uint8)
    # one pixel of overlap: a nucleus touching another across a chunk edge keeps its outline there
    return da.map_overlap(
        _outline_block, labels, depth=1, boundary="none", dtype=np.uint8, meta=meta, label_classes=label_classes
    )


def _outline_block(block: np.ndarray, label_classes: np.ndarray) -> np.ndarray:
    padded = np.pad(block, 1, mode="edge")  # the slide's edge is no outline
    inner = padded[1:-1, 1:-1]
    edge = (
        (inner != padded[:-2, 1:-1]) | (inner != padded[2:, 1:-1]) | (inner != padded[1:-1, :-2])
        | (inner != padded[1:-1, 2:])
    )  # fmt: skip
    return np.where(edge & (inner > 0), label_classes[np.minimum(inner, len(label_classes) - 1)], 0).astype(np.uint8)
