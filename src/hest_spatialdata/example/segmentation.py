"""The segmentations and patches of the Visium example, written as HEST writes them.

- tissue contours (``tissue_seg``): the outline of the real tissue, holes as interior rings;
- CellViT nuclei (``cellvit_seg``): the real nuclei tiles laid over the tissue, as GeoParquet and zipped GeoJSON;
- patches (``patches``): HEST's ``dump_patches`` h5 of 224 px crops around the spots under tissue.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import geopandas as gpd
import h5py
import numpy as np
import pandas as pd
import shapely

from hest_spatialdata.example.common import VisiumLayout, hest_file_name
from hest_spatialdata.example.sources import (
    NUCLEI_TILE_FILES,
    NUCLEI_TILE_PIXEL_SIZE_UM,
    NUCLEI_TILE_SIDE_PX,
    nuclei_tiles,
    xenium_mouse_brain,
)
from hest_spatialdata.source.layout import Part

if TYPE_CHECKING:
    import anndata as ad

#: HEST's ``dump_patches`` defaults.
PATCH_SIZE_PX = 224
PATCH_PIXEL_SIZE_UM = 0.5
PATCH_TISSUE_THRESHOLD = 0.15
#: RGB of the CellViT classes in the zipped GeoJSON (HEST derives them from a colormap; any colour is valid).
CELLVIT_COLORS = {
    "Neoplastic": [255, 0, 0], "Inflammatory": [34, 221, 77], "Connective": [35, 92, 236], "Dead": [254, 255, 0],
    "Epithelial": [255, 159, 68],
}  # fmt: skip


def tissue_mask(layout: VisiumLayout, bin_um: float = 50.0, *, fill_holes: bool = True) -> np.ndarray:
    """Boolean mask (one pixel per ``bin_um``) of where the real tissue is: bins holding cells, closed.

    Parameters
    ----------
    layout
        The slide layout.
    bin_um
        Side of one mask pixel in µm.
    fill_holes
        Fill the cell-free areas enclosed by tissue; with ``False`` they stay out of the mask (holes of the
        contours).

    Returns
    -------
    The mask, (ceil(height µm / bin_um), ceil(width µm / bin_um)).
    """
    from scipy import ndimage

    cells = xenium_mouse_brain().cells
    xy = layout.to_px(cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy()) * layout.pixel_size_um
    shape = (
        math.ceil(layout.height * layout.pixel_size_um / bin_um),
        math.ceil(layout.width * layout.pixel_size_um / bin_um),
    )
    mask = np.zeros(shape, bool)
    mask[(xy[:, 1] // bin_um).astype(int), (xy[:, 0] // bin_um).astype(int)] = True
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_fill_holes(mask) if fill_holes else mask


def tissue_contours(layout: VisiumLayout, mask: np.ndarray | None = None, bin_um: float = 50.0) -> gpd.GeoDataFrame:
    """Tissue contours (level-0 px, holes as interior rings) of a tissue mask, one polygon per piece of tissue.

    Parameters
    ----------
    layout
        The slide layout.
    mask
        A :func:`tissue_mask` (one pixel per ``bin_um``); by default the unfilled mask, which keeps the holes.
    bin_um
        Side of one mask pixel in µm.

    Returns
    -------
    Columns ``tissue_id`` (str, as in the released files) and ``geometry``, largest piece first.
    """
    mask = tissue_mask(layout, bin_um, fill_holes=False) if mask is None else mask
    rows, cols = np.nonzero(mask)
    side = bin_um / layout.pixel_size_um
    cells = shapely.box(cols * side, rows * side, (cols + 1) * side, (rows + 1) * side)
    tissue = shapely.intersection(shapely.union_all(cells), shapely.box(0, 0, layout.width, layout.height))
    pieces = shapely.get_parts(shapely.simplify(tissue, 0))  # simplify(0) drops the vertices left between cells
    pieces = pieces[np.argsort(-shapely.area(pieces), kind="stable")]
    return gpd.GeoDataFrame({"tissue_id": [str(i) for i in range(len(pieces))]}, geometry=pieces)


def write_tissue_contours(path: str | Path, contours: gpd.GeoDataFrame) -> Path:
    """Write ``tissue_seg/{id}_contours.geojson`` as HEST does: ``GeoDataFrame.to_file(driver="GeoJSON")``.

    Parameters
    ----------
    path
        Output ``.geojson`` (its folder is created).
    contours
        The contours, e.g. from :func:`tissue_contours`.

    Returns
    -------
    ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # HEST's contours have no CRS either: pixels, not a map projection
        warnings.filterwarnings("ignore", message=".*crs.*", category=UserWarning)
        contours.to_file(path, driver="GeoJSON")
    return path


def tiled_nuclei(layout: VisiumLayout, contours: gpd.GeoDataFrame, *, seed: int = 0) -> gpd.GeoDataFrame:
    """Real nuclei covering the tissue: translated copies of the real tiles, rescaled to the slide's pixel size.

    Copies of the tiles (chosen at random) are laid side by side over the slide; the nuclei whose centroid falls
    inside the tissue contours are kept. Coordinates are rounded to 0.01 px, so the GeoParquet and the GeoJSON
    written from them hold the same numbers.

    Parameters
    ----------
    layout
        The slide layout.
    contours
        Tissue contours (level-0 px), e.g. from :func:`tissue_contours`.
    seed
        Random seed of the choice of tiles.

    Returns
    -------
    HEST's CellViT layout: ``geometry`` (level-0 px), ``class``, ``cell_id`` = ``arange``, rows grouped by class
    in sorted order (the order of HEST's zipped GeoJSON, which its parquet is read from).
    """
    rng = np.random.default_rng(seed)
    scale = NUCLEI_TILE_PIXEL_SIZE_UM / layout.pixel_size_um
    step = NUCLEI_TILE_SIDE_PX * scale
    gx, gy = np.meshgrid(np.arange(0, layout.width, step), np.arange(0, layout.height, step))
    origins = np.column_stack([gx.ravel(), gy.ravel()])
    choice = rng.integers(len(NUCLEI_TILE_FILES), size=len(origins))
    parts = [translated_copies(tile, origins[choice == k], scale) for k, tile in enumerate(nuclei_tiles())]
    nuclei = pd.concat(parts, ignore_index=True)
    inside = shapely.contains_xy(contours.union_all(), *shapely.get_coordinates(nuclei.centroid).T)
    nuclei = nuclei[inside].sort_values("class", kind="stable").reset_index(drop=True)
    frame = gpd.GeoDataFrame(geometry=nuclei.geometry.to_numpy())
    frame["class"] = nuclei["class"].astype(str).to_numpy()
    frame["cell_id"] = np.arange(len(frame))
    return frame


def translated_copies(tile: gpd.GeoDataFrame, origins: np.ndarray, scale: float) -> gpd.GeoDataFrame:
    """Copies of a nuclei tile scaled by ``scale`` and shifted to each of ``origins`` (n, 2), built in one call.

    Parameters
    ----------
    tile
        Polygons with their ``class``, e.g. one of :func:`~hest_spatialdata.example.sources.nuclei_tiles`.
    origins
        (n, 2) x, y where each copy's origin goes.
    scale
        Factor applied to the tile's coordinates before the shift.

    Returns
    -------
    The copies one after the other, coordinates rounded to 0.01, with their ``class``.
    """
    kind, coords, (ring_offsets, polygon_offsets) = shapely.to_ragged_array(tile.geometry.to_numpy())
    n, n_coords, n_rings = len(origins), len(coords), len(ring_offsets) - 1
    copies = (coords[None] * scale + origins[:, None]).reshape(-1, 2).round(2)
    rings = np.append((ring_offsets[:-1][None] + n_coords * np.arange(n)[:, None]).ravel(), n * n_coords)
    polygons = np.append((polygon_offsets[:-1][None] + n_rings * np.arange(n)[:, None]).ravel(), n * n_rings)
    geometry = shapely.from_ragged_array(kind, copies, (rings, polygons))
    return gpd.GeoDataFrame({"class": np.tile(tile["class"].to_numpy(), n)}, geometry=geometry)


def write_cellvit(folder: str | Path, sample_id: str, nuclei: gpd.GeoDataFrame) -> tuple[Path, Path]:
    """Write ``{id}_cellvit_seg.parquet`` and ``{id}_cellvit_seg.geojson.zip`` as HEST does.

    The zip holds ``{id}_cellvit_seg.geojson``, a top-level list with one Feature per class (sorted) whose
    MultiPolygon holds each nucleus as ``[exterior_ring]`` (HEST's ``write_geojson``, without its ``indent=4``);
    the parquet is the GeoDataFrame HEST's ``read_gdf`` makes of it, written with ``to_parquet()``.

    Parameters
    ----------
    folder
        Output folder (``cellvit_seg`` in a HEST root); the file names come from the layout registry.
    sample_id
        The sample id.
    nuclei
        Nuclei in HEST's CellViT layout (``geometry``, ``class``, ``cell_id``), e.g. from :func:`tiled_nuclei`.

    Returns
    -------
    The parquet and the zip.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parquet = folder / hest_file_name(Part.CELLVIT, sample_id, 0)
    nuclei[["geometry", "class", "cell_id"]].to_parquet(parquet)
    _, coords, (ring_offsets, polygon_offsets) = shapely.to_ragged_array(nuclei.geometry.to_numpy())
    points = coords.tolist()
    starts = ring_offsets[polygon_offsets[:-1]]
    ends = ring_offsets[polygon_offsets[:-1] + 1]  # exterior ring only, as HEST writes
    polygons = [[points[a:b]] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    classes = nuclei["class"].to_numpy()
    features = [
        _cellvit_feature(f"{sample_id}-id-{name}", str(name), [polygons[i] for i in np.flatnonzero(classes == name)])
        for name in np.unique(classes)
    ]
    archive = folder / hest_file_name(Part.CELLVIT, sample_id, 1)
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(archive.name.removesuffix(".zip"), _json_bytes(features))
    return parquet, archive


def _cellvit_feature(feature_id: str, name: str, polygons: list[Any]) -> dict[str, Any]:
    """One class of HEST's CellViT GeoJSON: a MultiPolygon of single-ring polygons, QuPath properties."""
    classification = {"name": name, "color": CELLVIT_COLORS.get(name, [0, 0, 0])}
    return {
        "type": "Feature",
        "id": feature_id,
        "geometry": {"type": "MultiPolygon", "coordinates": polygons},
        "properties": {"objectType": "annotation", "classification": classification},
    }


def _json_bytes(document: Any) -> bytes:
    try:  # msgspec (a zarr dependency) writes floats ~10x faster than json, with the same shortest repr
        import msgspec
    except ImportError:
        return json.dumps(document).encode()
    return msgspec.json.encode(document)


def write_patches(
    path: str | Path,
    slide: np.ndarray,
    adata: ad.AnnData,
    pixel_size_um: float,
    contours: gpd.GeoDataFrame | None = None,
) -> Path:
    """Write ``patches/{id}.h5`` as HEST's ``dump_patches`` does (hestcore ``WSIPatcher.to_h5``, ``initsave_hdf5``).

    224 x 224 px patches at 0.5 µm/px around every spot centre: the source crop of ``round(224 * factor)`` level-0
    px (``factor = 0.5 / pixel_size_um``) starts at ``coords = int(centre - (224 * factor) // 2)``, is padded with
    black off the slide (OpenSlide's transparent pixels) and resized with ``cv2.resize`` at OpenCV's default
    ``INTER_LINEAR``, the call of hestcore's ``WSIPatcher.get_tile_xy`` (level 0: the generated slide has no finer
    level to choose, and HEST reads level 0 of any slide coarser than 0.25 µm/px, e.g. 0.27). Patches entirely
    off the slide are dropped, and, with ``contours``, those less than 15% under tissue, as HEST does; so the h5
    may have fewer rows than the h5ad.

    Parameters
    ----------
    path
        Output ``.h5``.
    slide
        The slide's level 0, (h, w, 3) uint8.
    adata
        The st AnnData (``obsm['spatial']`` centres, ``obs_names`` barcodes).
    pixel_size_um
        µm per level-0 pixel of the slide.
    contours
        Tissue contours for HEST's tissue filter, or ``None`` to keep every patch on the slide.
    """
    factor = PATCH_PIXEL_SIZE_UM / pixel_size_um
    coords, barcodes, side = hest_patch_coords(adata, factor, slide.shape[:2], contours)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (PATCH_SIZE_PX, PATCH_SIZE_PX, 3)
    with h5py.File(path, "w") as h5:
        img = h5.create_dataset("img", (len(coords), *shape), np.uint8, chunks=(1, *shape), maxshape=(None, *shape))
        for start in range(0, len(coords), 256):  # h5py writes a slab much faster than row by row
            batch = coords[start : start + 256].tolist()
            img[start : start + len(batch)] = np.stack([_patch(slide, x, y, side) for x, y in batch])
        img.attrs.update({"patch_size": PATCH_SIZE_PX, "factor": factor, "pixel_size": pixel_size_um})
        h5.create_dataset("coords", data=coords, chunks=(1, 2), maxshape=(None, 2))
        strings = h5py.string_dtype("utf-8")
        h5.create_dataset("barcode", data=barcodes[:, None], dtype=strings, chunks=(1, 1), maxshape=(None, 1))
    return path


def hest_patch_coords(
    adata: ad.AnnData, factor: float, slide_shape: tuple[int, int], contours: gpd.GeoDataFrame | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """HEST's patch selection: top-left ``coords`` (int64), ``barcodes`` and the crop side in level-0 px.

    Parameters
    ----------
    adata
        The st AnnData (``obsm['spatial']`` centres, ``obs_names`` barcodes).
    factor
        Level-0 px per patch px (``0.5 / pixel_size_um``).
    slide_shape
        (height, width) of the slide's level 0.
    contours
        Tissue contours for HEST's tissue filter, or ``None`` to keep every patch on the slide.

    Returns
    -------
    ``(coords, barcodes, side)``.
    """
    size_src = PATCH_SIZE_PX * factor
    side = round(size_src)  # hestcore: patch_size_src = round(patch_size * downsample)
    height, width = slide_shape
    topleft = np.asarray(adata.obsm["spatial"], dtype=np.float64) - size_src // 2
    x, y = topleft[:, 0], topleft[:, 1]
    on_slide = (x + size_src >= 0) & (x < width) & (y + size_src >= 0) & (y < height)
    coords = topleft[on_slide].astype(np.int64)
    barcodes = np.asarray(adata.obs_names, dtype=object)[on_slide]
    if contours is not None:
        squares = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + side, coords[:, 1] + side)
        tissue = shapely.area(shapely.intersection(squares, contours.union_all()))
        under = tissue >= PATCH_TISSUE_THRESHOLD * side**2
        coords, barcodes = coords[under], barcodes[under]
    return coords, barcodes, side


def _patch(slide: np.ndarray, x: int, y: int, side: int) -> np.ndarray:
    crop = np.zeros((side, side, 3), np.uint8)
    height, width = slide.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
    if x1 > x0 and y1 > y0:
        crop[y0 - y : y1 - y, x0 - x : x1 - x] = slide[y0:y1, x0:x1]
    return cv2.resize(crop, (PATCH_SIZE_PX, PATCH_SIZE_PX))  # hestcore's call: the default INTER_LINEAR
