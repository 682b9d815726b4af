"""Patch–expression pairs from a converted store, for HEST-Benchmark-style training.

HEST-Benchmark pairs each spot's expression with a 224 x 224 px H&E patch at 0.5 µm/px centred on the spot
(``docs/hest_format.md`` sections 4 and 8). :class:`PatchDataset` cuts such patches at any size and
resolution straight from the store's ``he`` pyramid: it reads the coarsest level that is at least as fine as
asked, and only the chunks the patches cover, then resizes as HEST does (``_patch_reader.py``). A store path or URL
is opened without spatialdata (``_store_parts.py``: ``zarr.json``, GeoParquet and anndata's reader), so a
DataLoader worker is ready in a fraction of a second. It has ``__len__``, ``__getitem__`` and the batched
``__getitems__`` that ``torch.utils.data.DataLoader`` calls when it exists, so it can be handed to a DataLoader as
is; torch is not needed.

Example
-------
>>> ds = PatchDataset("TENX95.zarr", genes=["ERBB2", "ESR1"], log1p=True)  # doctest: +SKIP
>>> image, expression, barcode = ds[0]  # (224, 224, 3) uint8, (2,) float32, str  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hest_spatialdata._constants import CoordinateSystems, Elements
from hest_spatialdata.loaders._patch_reader import FILL_VALUE, ChunkCache, DaskChunks, PatchCutter, default_threads
from hest_spatialdata.loaders._zarr_chunks import open_level
from hest_spatialdata.storage._parts import (
    ImageLevel,
    StoreFiles,
    apply,
    image_levels,
    read_spot_table,
    shape_centres,
    table_keys,
)
from hest_spatialdata.storage.locations import is_url

__all__ = ["DEFAULT_CACHE_BYTES", "FILL_VALUE", "LEVEL_TOLERANCE", "ChunkCache", "PatchDataset", "hest_squares"]

#: Memory for decoded chunks / finished patches per dataset: bounded, whatever the slide size.
DEFAULT_CACHE_BYTES = 256 * 1024**2
#: Pyramid levels are halved with rounding, so a level may be this much coarser than a power of two and still count.
LEVEL_TOLERANCE = 0.01


class PatchDataset:
    """Image patches centred on the spots of a converted HEST store, with each spot's expression.

    Parameters
    ----------
    store
        A store written by this package: a path, an fsspec URL (``s3://bucket/prefix/X.zarr``) or a
        :class:`spatialdata.SpatialData` read from one (elements in memory work too).
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
        Memory for decoded chunks or finished patches (least recently used dropped).
    chunk_cache
        A :class:`ChunkCache` shared with other datasets (``cache_bytes`` is then ignored).
    resample
        ``"hest"`` (default): HEST's own patch pipeline, OpenCV's bilinear ``cv2.resize`` (no antialiasing) of the
        square hestcore's ``WSIPatcher`` reads (see :func:`hest_squares`): the patches equal HEST's h5 patches of
        the same barcodes where the level read is level 0 (slides coarser than ``um_per_px`` / 2). ``"antialias"``:
        PIL's antialiased bilinear resize of the same square, smoother where a patch is reduced (less aliasing)
        but not HEST's patches, and several times the CPU. See :func:`hest_spatialdata.loaders._patch_reader.resample`.
    level_tolerance
        **A quality trade**: a pyramid level up to this fraction coarser than ``um_per_px`` is read instead of a
        finer one. The default (1 %) only absorbs the rounding of the level sizes, so patches are resampled from a
        level at least as fine as asked, as HEST's choice (OpenSlide's ``get_best_level_for_downsample``: the
        largest level whose downsample is at most the asked one). ``0.1`` reads level 1 of a 0.27 µm/px slide
        (0.55 µm/px) for 0.5 µm/px patches: 4x fewer pixels to decode, but those patches are upsampled from a
        coarser image and are no longer HEST's.
    read_ahead
        Cut every patch of a band of chunk rows when one of them is first asked, keeping the finished patches in
        the cache (each chunk decoded about once per epoch; later epochs copy patches out). ``None``: when the cache
        holds every patch of the dataset.
    threads
        Threads decoding chunks and resampling patches (``None``: the cores available, at most 4). With several
        DataLoader workers, 1 per worker avoids oversubscription.
    storage_options
        fsspec options for a store at a URL (credentials, endpoint).
    spot_table
        The store's table as :func:`hest_spatialdata.storage._parts.read_spot_table` reads it, when the caller has it
        already (a cohort); read from the store otherwise.

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
        *,
        resample: str = "hest",
        level_tolerance: float = LEVEL_TOLERANCE,
        read_ahead: bool | None = None,
        threads: int | None = None,
        storage_options: dict[str, Any] | None = None,
        spot_table: Any = None,
    ) -> None:
        if patch_size_px < 1 or not um_per_px > 0:
            raise ValueError(f"patch_size_px must be >= 1 and um_per_px > 0, got {patch_size_px}, {um_per_px}")
        self.patch_size_px, self.um_per_px, self.log1p = int(patch_size_px), float(um_per_px), log1p
        source = _open(store, table, image, spot_table, storage_options)
        adata = source["table"]
        rows, self.barcodes, centres_global = _spot_rows(adata, source["centres"], barcodes)
        columns, self.genes = gene_columns(adata, genes)
        self._expression = _expression_matrix(adata.X, rows, columns)
        levels = source["levels"]
        self.level = _best_level([lv.um_per_px for lv in levels], self.um_per_px, level_tolerance)
        chosen = levels[self.level]
        self.level_um_per_px = chosen.um_per_px
        self.centres_px = apply(chosen.to_level, centres_global)
        origins, size = hest_squares(
            apply(levels[0].to_level, centres_global), self.patch_size_px,
            self.um_per_px / levels[0].um_per_px, chosen.um_per_px / levels[0].um_per_px,
        )  # fmt: skip
        cache = chunk_cache if chunk_cache is not None else ChunkCache(cache_bytes)
        if read_ahead is None:
            read_ahead = cache.max_bytes >= len(self) * self.patch_size_px**2 * chosen.shape[0]
        self._cutter = PatchCutter(
            source["chunks"](self.level), origins, size, self.patch_size_px, cache,
            key=(source["key"], image, self.level, size, self.patch_size_px),
            read_ahead=bool(read_ahead), threads=default_threads() if threads is None else int(threads),
            method=resample,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.barcodes)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The patch (``patch_size_px``, ``patch_size_px``, 3) uint8, the expression (float32) and the barcode."""
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray, str]]:
        """Items of ``indices`` at once (what ``torch.utils.data.DataLoader`` asks of a batch when this exists).

        The patches of a batch are decoded and resampled together, in the dataset's threads.
        """
        positions = [self._position(i) for i in indices]
        images = self.images(positions)
        return [(im, self.expression(i), str(self.barcodes[i])) for im, i in zip(images, positions, strict=True)]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        return (
            f"PatchDataset({len(self)} spots x {len(self.genes)} genes, {self.patch_size_px} px at {self.um_per_px} "
            f"µm/px from level {self.level} ({self.level_um_per_px:.3g} µm/px))"
        )

    def _position(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        return int(index) % len(self)

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
        return self.images([self._position(index)])[0]

    def images(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Patches of several items (non-negative indices), decoded and resampled together."""
        return self._cutter.patches([int(i) for i in indices])


# --------------------------------------------------------------------------------------------- opening


def _open(store: Any, table: str, image: str, spot_table: Any, storage_options: dict[str, Any] | None) -> dict:
    """What a dataset needs of a store: table, spot centres by id, pyramid levels and a chunk reader per level."""
    if isinstance(store, str | Path | StoreFiles) or is_url(store):  # a UPath (locations.locate) is not a Path
        files = store if isinstance(store, StoreFiles) else StoreFiles(store, storage_options)
        adata = spot_table if spot_table is not None else read_spot_table(files, table)
        levels = image_levels(files, image)

        def chunks(k: int) -> Any:
            reader = open_level(files, levels[k])
            if reader is None:
                raise ValueError(f"{files.url}: level {k} of image {image!r} is not readable as its zarr.json says")
            return reader

        region = table_keys(adata)[0]
        return {"table": adata, "centres": lambda: shape_centres(files, _one_region(region)), "levels": levels,
                "chunks": chunks, "key": files.url}  # fmt: skip
    return _open_spatialdata(store, table, image)


def _open_spatialdata(sdata: Any, table: str, image: str) -> dict:
    """The same parts of a :class:`spatialdata.SpatialData` (elements possibly in memory)."""
    import shapely
    from xarray import DataArray

    adata = sdata.tables[table]
    region = _one_region(table_keys(adata)[0])
    tree = sdata[image]
    arrays = (
        [tree[name]["image"] for name in sorted(tree.children, key=lambda n: int(n.removeprefix("scale")))]
        if not isinstance(tree, DataArray)
        else [tree]
    )
    levels = [
        ImageLevel(
            key="",
            shape=tuple(a.shape),
            to_level=np.linalg.inv(_affine(a, CoordinateSystems.GLOBAL)),
            um_per_px=float(np.abs(np.diag(_affine(a, CoordinateSystems.MICRONS))[:2]).max()),
        )  # fmt: skip
        for a in arrays
    ]
    path = getattr(sdata, "path", None)
    stored = image_levels(StoreFiles(path), image) if path is not None and _has_image(path, image) else None

    def chunks(k: int) -> Any:
        if stored is not None and len(stored) == len(levels) and stored[k].shape == levels[k].shape:
            reader = open_level(StoreFiles(path), stored[k])  # backed by a store: its files, no dask graph per chunk
            if reader is not None:
                return reader
        return DaskChunks(arrays[k].data)

    def centres() -> tuple[pd.Index, np.ndarray]:
        shapes = sdata.shapes[region]
        xy = shapely.get_coordinates(shapely.centroid(shapes.geometry.to_numpy()))
        return pd.Index(shapes.index.astype(str)), apply(_affine(shapes, CoordinateSystems.GLOBAL), xy)

    key = str(path) if path is not None else f"memory-{id(sdata)}"
    return {"table": adata, "centres": centres, "levels": levels, "chunks": chunks, "key": key}


def _has_image(path: Any, image: str) -> bool:
    return (Path(path) / "images" / image / "zarr.json").is_file()


def _affine(element: Any, coordinate_system: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    transformation = get_transformation(element, to_coordinate_system=coordinate_system)
    return transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))


def _one_region(region: Any) -> str:
    if not isinstance(region, str):
        raise ValueError(f"the table annotates several regions ({region}); expected only the spots")
    return region


def _spot_rows(adata: Any, centres: Any, barcodes: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Table rows, spot ids and spot centres (x, y in ``global``) of the items."""
    region, region_key, instance_key = table_keys(adata)
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
    shape_ids, xy = centres()
    at = shape_ids.get_indexer(ids)
    if (at < 0).any():
        raise KeyError(f"{(at < 0).sum()} table rows have no shape in {region!r}, e.g. {ids[at < 0][0]!r}")
    return rows, ids.to_numpy(), xy[at]


def gene_columns(adata: Any, genes: Sequence[str] | None) -> tuple[np.ndarray | None, pd.Index]:
    """Columns of ``genes`` (var names, else HEST names) in ``adata`` and their var names; all for ``None``."""
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


def hest_squares(
    centres: np.ndarray, patch_size_px: int, downsample: float, level_downsample: float
) -> tuple[np.ndarray, int]:
    """The squares HEST reads for its patches: top-left corners (n, 2) and side, in pixels of the chosen level.

    HEST's ``dump_patches`` takes the top-left ``int(centre - (patch_size_px * downsample) // 2)`` (level-0 px,
    truncated toward zero) and hestcore's ``WSIPatcher`` reads a square of ``round(round(patch_size_px *
    downsample) / level_downsample)`` px of the level from there. Off level 0, the corner is rounded to the
    level's pixels (OpenSlide reads it at the fractional position).

    Parameters
    ----------
    centres
        (n, 2) spot centres (x, y) in level-0 pixels.
    patch_size_px
        Side of the returned patches.
    downsample
        Level-0 pixels per patch pixel.
    level_downsample
        Level-0 pixels per pixel of the level read.
    """
    size_src = patch_size_px * downsample
    topleft = (np.asarray(centres, dtype=np.float64) - size_src // 2).astype(np.int64).reshape(-1, 2)
    size = max(1, round(round(size_src) / level_downsample))
    return np.round(topleft / level_downsample).astype(np.int64), size


def _best_level(sizes: list[float], um_per_px: float, tolerance: float) -> int:
    """The coarsest level at most ``tolerance`` coarser than ``um_per_px`` (level 0 if none is)."""
    fine_enough = [k for k, size in enumerate(sizes) if size <= um_per_px * (1 + tolerance)]
    return fine_enough[-1] if fine_enough else 0
