"""Patch–expression pairs from a converted store, for HEST-Benchmark-style training.

HEST-Benchmark pairs each spot's expression with a 224 x 224 px H&E patch at 0.5 µm/px centred on the spot
(``docs/hest_format.md`` sections 4 and 8). :class:`PatchDataset` cuts such patches at any size and
resolution straight from the store's ``he`` pyramid: it reads the coarsest level that is at least as fine as
asked, and only the chunks the patch covers, then resizes with PIL. It has ``__len__`` and ``__getitem__``, so
it can be handed to ``torch.utils.data.DataLoader`` as is (or wrapped in a ``torch`` ``Dataset``); torch is
not needed.

Example
-------
>>> ds = PatchDataset("TENX95.zarr", genes=["ERBB2", "ESR1"], log1p=True)  # doctest: +SKIP
>>> image, expression, barcode = ds[0]  # (224, 224, 3) uint8, (2,) float32, str  # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely
from PIL import Image

from hest_spatialdata._constants import CoordinateSystems, Elements
from hest_spatialdata._zarr_chunks import open_level

#: Value of the pixels of a patch that lie off the slide (black, as HEST's OpenSlide crops).
FILL_VALUE = 0
#: Decoded image chunks kept per dataset (a 1024 x 1024 RGB chunk is 3 MB): bounded, whatever the slide size.
DEFAULT_CACHE_BYTES = 256 * 1024**2
#: Pyramid levels are halved with rounding, so a level may be this much coarser than a power of two and still count.
LEVEL_TOLERANCE = 0.01


class PatchDataset:
    """Image patches centred on the spots of a converted HEST store, with each spot's expression.

    Parameters
    ----------
    store
        A store written by this package (path) or a :class:`spatialdata.SpatialData` read from one.
    patch_size_px
        Side of the returned patches in pixels.
    um_per_px
        Resolution of the returned patches in µm per pixel (HEST-Benchmark: 224 px at 0.5 µm/px = 112 µm).
    genes
        Genes to return, by table var name or original name (``var["gene_name"]``); all genes by default.
    table
        Name of the table holding the expression; its annotated shapes give the spot centres.
    image
        Name of the H&E image element.
    barcodes
        Spots to use, in this order (e.g. ``sdata["patches"].index``, the spots HEST kept under tissue);
        every spot of the table, in table order, by default.
    log1p
        Return ``log1p`` of the counts (HEST-Benchmark's normalisation).
    cache_bytes
        Memory for decoded image chunks, reused by the patches that share them (least recently used dropped).
    chunk_cache
        A :class:`ChunkCache` shared with other datasets (``cache_bytes`` is then ignored).

    Attributes
    ----------
    barcodes
        The spot of every item, as str.
    genes
        The var names of the expression vector.
    level
        The pyramid level the patches are cut from.
    level_um_per_px
        µm per pixel of that level.
    centres_px
        Spot centres (x, y) in pixels of that level.
    """

    def __init__(
        self,
        store: str | Path | Any,
        patch_size_px: int = 224,
        um_per_px: float = 0.5,
        genes: Sequence[str] | None = None,
        table: str = Elements.TABLE.value,
        image: str = Elements.HE.value,
        barcodes: Sequence[str] | None = None,
        log1p: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        chunk_cache: ChunkCache | None = None,
    ) -> None:
        if patch_size_px < 1 or not um_per_px > 0:
            raise ValueError(f"patch_size_px must be >= 1 and um_per_px > 0, got {patch_size_px}, {um_per_px}")
        sdata = _read_store(store)
        self.patch_size_px = int(patch_size_px)
        self.um_per_px = float(um_per_px)
        self.log1p = log1p
        adata = sdata.tables[table]
        rows, spot_ids, centres_global = _spot_rows(sdata, adata, barcodes)
        gene_columns, self.genes = _gene_columns(adata, genes)
        self._expression = _expression_matrix(adata.X, rows, gene_columns)
        self.barcodes = spot_ids
        self.level, array, to_level, self.level_um_per_px = _best_level(sdata[image], self.um_per_px)
        path = getattr(sdata, "path", None)  # backed by a store: read its chunks directly (no dask graph per chunk)
        on_disk = open_level(path, image, self.level, array.shape) if path is not None else None
        cache = chunk_cache if chunk_cache is not None else ChunkCache(cache_bytes)
        key = (str(path), image, self.level) if path is not None else None  # the chunks' identity in a shared cache
        self._reader = _ChunkReader(on_disk if on_disk is not None else _DaskChunks(array), cache, key=key)
        self.centres_px = _apply(to_level, centres_global)
        self._side = self.patch_size_px * self.um_per_px / self.level_um_per_px

    def __len__(self) -> int:
        return len(self.barcodes)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The patch (``patch_size_px``, ``patch_size_px``, 3) uint8, the expression (float32) and the barcode."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        index = int(index) % len(self)
        return self.image(index), self.expression(index), str(self.barcodes[index])

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        return (
            f"PatchDataset({len(self)} spots x {len(self.genes)} genes, {self.patch_size_px} px at {self.um_per_px} "
            f"µm/px from level {self.level} ({self.level_um_per_px:.3g} µm/px))"
        )

    def expression(self, index: int) -> np.ndarray:
        """Expression vector of item ``index`` (float32, ``log1p`` if asked)."""
        matrix = self._expression
        if sp.issparse(matrix):  # one CSR row by hand: scipy's row indexing costs more than a patch
            start, stop = matrix.indptr[index], matrix.indptr[index + 1]
            values = np.zeros(matrix.shape[1], dtype=np.float32)
            values[matrix.indices[start:stop]] = matrix.data[start:stop]
        else:
            values = np.asarray(matrix[index], dtype=np.float32).ravel()
        return np.log1p(values) if self.log1p else values

    def image(self, index: int) -> np.ndarray:
        """Patch of item ``index``: reads only the chunks of the chosen level that it covers (cached)."""
        cx, cy = self.centres_px[index]
        size = max(1, round(self._side))
        x0, y0 = round(cx - self._side / 2), round(cy - self._side / 2)
        crop = self._reader.region(x0, y0, size)
        if size == self.patch_size_px:
            return crop
        return np.asarray(Image.fromarray(crop).resize((self.patch_size_px, self.patch_size_px), Image.BILINEAR))


def _read_store(store: str | Path | Any) -> Any:
    import spatialdata as sd

    if isinstance(store, sd.SpatialData):
        return store
    return sd.read_zarr(store, selection=("images", "shapes", "tables"))


def _spot_rows(sdata: Any, adata: Any, barcodes: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Table rows, spot ids and spot centres (x, y in ``global``) of the items."""
    from spatialdata.models import get_table_keys

    region, region_key, instance_key = get_table_keys(adata)
    if not isinstance(region, str):
        raise ValueError(f"the table annotates several regions ({region}); expected only the spots")
    rows = np.flatnonzero(np.asarray(adata.obs[region_key]) == region)
    ids = pd.Index(np.asarray(adata.obs[instance_key])[rows].astype(str))
    if barcodes is not None:
        wanted = pd.Index(np.asarray(barcodes, dtype=str))
        position = ids.get_indexer(wanted)
        if (position < 0).any():
            raise KeyError(
                f"{(position < 0).sum()} barcodes are not spots of the table, e.g. {wanted[position < 0][0]!r}"
            )
        rows, ids = rows[position], wanted
    shapes = sdata.shapes[region]
    at = pd.Index(shapes.index.astype(str)).get_indexer(ids)
    if (at < 0).any():
        raise KeyError(f"{(at < 0).sum()} table rows have no shape in {region!r}, e.g. {ids[at < 0][0]!r}")
    # circles are points; squares and other polygons are centred on their centroid
    centres = shapely.get_coordinates(shapely.centroid(shapes.geometry.to_numpy()[at]))
    return rows, ids.to_numpy(), _apply(_affine(shapes, CoordinateSystems.GLOBAL), centres)


def _gene_columns(adata: Any, genes: Sequence[str] | None) -> tuple[np.ndarray | None, pd.Index]:
    if genes is None:
        return None, pd.Index(adata.var_names)
    names = pd.Index(adata.var_names)
    originals = pd.Index(adata.var["gene_name"].astype(str)) if "gene_name" in adata.var else names
    columns = []
    for gene in genes:
        column = names.get_loc(gene) if gene in names else originals.get_indexer([gene])[0]
        if not isinstance(column, int | np.integer) or column < 0:
            raise KeyError(f"gene {gene!r} is not in the table (nor unique)")
        columns.append(int(column))
    return np.array(columns, dtype=np.intp), names[columns]


def _expression_matrix(x: Any, rows: np.ndarray, columns: np.ndarray | None) -> Any:
    matrix = x if columns is None else x[:, columns]
    matrix = matrix[rows]
    return sp.csr_matrix(matrix) if sp.issparse(matrix) else np.asarray(matrix)


def _best_level(tree: Any, um_per_px: float) -> tuple[int, Any, np.ndarray, float]:
    """The coarsest level at least as fine as ``um_per_px`` (level 0 if none is).

    Returns its number, its array (c, y, x), the global -> level pixel matrix and its µm per pixel.
    """
    from xarray import DataArray

    levels = (
        [tree[name]["image"] for name in sorted(tree.children, key=_level_number)]
        if not isinstance(tree, DataArray)
        else [tree]
    )
    sizes = [float(np.abs(np.diag(_affine(level, CoordinateSystems.MICRONS))[:2]).max()) for level in levels]
    fine_enough = [k for k, size in enumerate(sizes) if size <= um_per_px * (1 + LEVEL_TOLERANCE)]
    k = fine_enough[-1] if fine_enough else 0
    to_level = np.linalg.inv(_affine(levels[k], CoordinateSystems.GLOBAL))
    return k, levels[k].data, to_level, sizes[k]


def _level_number(name: str) -> int:
    return int(name.removeprefix("scale"))


def _affine(element: Any, coordinate_system: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    transformation = get_transformation(element, to_coordinate_system=coordinate_system)
    return transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))


def _apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


class ChunkCache:
    """Decoded image chunks kept in memory, least recently used dropped past ``max_bytes``.

    One per :class:`PatchDataset` by default; a cohort passes one to all its stores' datasets, so that the memory
    bound holds for the whole cohort and the stores most used get most of it.

    Parameters
    ----------
    max_bytes
        Memory for the chunks (0: keep nothing).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._chunks: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> np.ndarray | None:
        """The chunk under ``key`` (now the most recently used), or ``None``."""
        block = self._chunks.get(key)
        if block is not None:
            self._chunks.move_to_end(key)
        return block

    def put(self, key: tuple[Any, ...], block: np.ndarray) -> None:
        """Keep ``block``, dropping the least recently used chunks past the budget."""
        if self.max_bytes <= 0:
            return
        self._chunks[key] = block
        self.nbytes += block.nbytes
        while self.nbytes > self.max_bytes and self._chunks:
            _, evicted = self._chunks.popitem(last=False)
            self.nbytes -= evicted.nbytes


class _DaskChunks:
    """Chunks of an in-memory or dask (c, y, x) array (an element not backed by a store), one at a time."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        chunks = getattr(array, "chunks", None)
        self._y_edges = np.cumsum((0, *chunks[1])) if chunks else np.array([0, self.shape[1]])
        self._x_edges = np.cumsum((0, *chunks[2])) if chunks else np.array([0, self.shape[2]])

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        return self._y_edges, self._x_edges

    def read(self, by: int, bx: int) -> np.ndarray:
        block = self.array[:, self._y_edges[by] : self._y_edges[by + 1], self._x_edges[bx] : self._x_edges[bx + 1]]
        return np.asarray(block.compute(scheduler="synchronous") if hasattr(block, "compute") else block)


class _ChunkReader:
    """Regions of a lazy (c, y, x) array, reading each chunk once and keeping the recent ones (LRU).

    A patch is much smaller than a store chunk, and neighbouring spots share chunks: decoding each chunk once
    instead of once per patch is what makes the loader fast. Chunks are kept as (y, x, c), so that a patch is
    plain slices of them.
    """

    def __init__(self, chunks: Any, cache: ChunkCache, key: Any = None) -> None:
        self.chunks = chunks
        self.shape = chunks.shape
        self.cache = cache
        self._key = key if key is not None else id(self)
        if hasattr(chunks, "edges"):
            self._y_edges, self._x_edges = chunks.edges()
        else:
            _, chunk_y, chunk_x = chunks.chunk_shape
            self._y_edges = np.append(np.arange(0, self.shape[1], chunk_y), self.shape[1])
            self._x_edges = np.append(np.arange(0, self.shape[2], chunk_x), self.shape[2])

    def region(self, x0: int, y0: int, size: int) -> np.ndarray:
        """``array[:, y0:y0+size, x0:x0+size]`` as (y, x, c); pixels off the array are :data:`FILL_VALUE`."""
        channels, height, width = self.shape
        crop = np.full((size, size, channels), FILL_VALUE, dtype=np.uint8)
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + size, width), min(y0 + size, height)
        if xb <= xa or yb <= ya:
            return crop
        for by in _block_range(self._y_edges, ya, yb):
            for bx in _block_range(self._x_edges, xa, xb):
                top, left = self._y_edges[by], self._x_edges[bx]
                block = self._chunk(by, bx)
                sy0, sy1 = max(ya, top), min(yb, top + block.shape[0])
                sx0, sx1 = max(xa, left), min(xb, left + block.shape[1])
                crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[sy0 - top : sy1 - top, sx0 - left : sx1 - left]
        return crop

    def _chunk(self, by: int, bx: int) -> np.ndarray:
        key = (self._key, by, bx)
        block = self.cache.get(key)
        if block is None:
            block = _channels_last(self.chunks.read(by, bx))
            self.cache.put(key, block)
        return block


def _channels_last(block: Any) -> np.ndarray:
    """(c, y, x) -> contiguous (y, x, c), one channel at a time.

    numpy's copy of a transposed uint8 array (``ascontiguousarray(block.transpose(1, 2, 0))``) is ~5x slower.
    """
    block = np.asarray(block)
    out = np.empty((*block.shape[1:], block.shape[0]), dtype=block.dtype)
    for channel in range(block.shape[0]):
        out[..., channel] = block[channel]
    return out


def _block_range(edges: np.ndarray, start: int, stop: int) -> range:
    """Indices of the chunks along one axis that ``[start, stop)`` touches."""
    return range(int(np.searchsorted(edges, start, "right")) - 1, int(np.searchsorted(edges, stop - 1, "right")))
