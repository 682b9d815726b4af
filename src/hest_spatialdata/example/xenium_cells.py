"""The cells of the Xenium example: the real cells as polygons on the slide, and their HEST segmentation files.

Each cell is a slightly irregular polygon around its real centroid with its real area; its nucleus is the same
polygon shrunk to the real nucleus area. Both are written as HEST's ``xenium_seg`` GeoParquet and zipped GeoJSON.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from hest_spatialdata.example.common import VisiumLayout
from hest_spatialdata.example.sources import xenium_mouse_brain
from hest_spatialdata.source.layout import PARTS, Part

CellIdType = Literal["int", "str", "bytes"]


def xenium_cell_ids(ids: np.ndarray) -> np.ndarray:
    """10x string cell ids (XOA >= 1.3 style, e.g. ``1`` → ``"aaaaaaab-1"``): the id's 8 hex digits as ``a``-``p``.

    Parameters
    ----------
    ids
        Integer cell ids (uint32).

    Returns
    -------
    The string ids (object array).
    """
    ids = np.asarray(ids, dtype=np.uint32)
    digits = (ids[:, None] >> np.arange(28, -1, -4, dtype=np.uint32)) & 0xF
    letters = (digits + ord("a")).astype(np.uint8)
    return np.array([row.tobytes().decode() + "-1" for row in letters], dtype=object)


def xenium_cells_in(crop_um: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Row positions of the real cells whose centroid lies in ``crop_um = (x0, y0, x1, y1)`` (Xenium µm).

    Parameters
    ----------
    crop_um
        The crop, or ``None`` for every cell.

    Returns
    -------
    Positions in :func:`~hest_spatialdata.example.sources.xenium_mouse_brain` ``.cells``.
    """
    cells = xenium_mouse_brain().cells
    if crop_um is None:
        return np.arange(len(cells))
    x0, y0, x1, y1 = crop_um
    x, y = cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy()
    return np.flatnonzero((x >= x0) & (x < x1) & (y >= y0) & (y < y1))


def star_polygons(
    centres: np.ndarray, areas: np.ndarray, *, n_vertices: int = 12, irregularity: float = 0.2, seed: int = 0
) -> np.ndarray:
    """Slightly irregular polygons star-shaped around ``centres`` with exactly the given ``areas``.

    Parameters
    ----------
    centres
        (n, 2) x, y.
    areas
        (n,) areas in the squared unit of ``centres``.
    n_vertices
        Vertices per polygon.
    irregularity
        Relative jitter of the vertex radii.
    seed
        Random seed.

    Returns
    -------
    (n, n_vertices, 2) vertices, counter-clockwise, ring not closed.
    """
    rng = np.random.default_rng(seed)
    n = len(centres)
    step = 2 * np.pi / n_vertices
    angles = step * (np.arange(n_vertices) + rng.uniform(-0.3, 0.3, (n, n_vertices)))
    radii = 1 + irregularity * rng.uniform(-1, 1, (n, n_vertices))
    wedge = np.sin(np.diff(angles, axis=1, append=angles[:, :1] + 2 * np.pi))
    unit_area = 0.5 * (radii * np.roll(radii, -1, axis=1) * wedge).sum(axis=1)
    radii *= np.sqrt(np.asarray(areas, dtype=np.float64) / unit_area)[:, None]
    offsets = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=-1)
    return np.asarray(centres, dtype=np.float64)[:, None, :] + offsets


@dataclass(frozen=True)
class XeniumSampleCells:
    """The cells of a synthetic Xenium sample, in slide pixels."""

    rows: np.ndarray  # positions in the real run
    ids: np.ndarray  # the ids as written (int64, str or bytes objects)
    centres: np.ndarray  # (n, 2) px
    vertices: np.ndarray  # (n, k, 2) px, cell boundary
    nucleus_scale: np.ndarray  # (n,) the nucleus is the cell polygon scaled by this about the centre


def xenium_sample_cells(rows: np.ndarray, layout: VisiumLayout, id_type: CellIdType, seed: int) -> XeniumSampleCells:
    """The real cells ``rows`` as polygons on the slide, with their ids stored as ``id_type``.

    Parameters
    ----------
    rows
        Positions of the cells in the real run (:func:`xenium_cells_in`).
    layout
        The slide frame.
    id_type
        How the cell ids are stored, see :func:`~hest_spatialdata.example.write_xenium_sample`.
    seed
        Random seed of the polygons.

    Returns
    -------
    The cells in slide pixels.
    """
    cells = xenium_mouse_brain().cells.iloc[rows]
    centres = layout.to_px(cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy())
    areas = cells["cell_area"].to_numpy() / layout.pixel_size_um**2
    vertices = star_polygons(centres, areas, seed=seed)
    scale = np.sqrt(np.minimum(cells["nucleus_area"].to_numpy() / cells["cell_area"].to_numpy(), 1.0))
    return XeniumSampleCells(rows, _typed_ids(cells["cell_id"].to_numpy(), id_type), centres, vertices, scale)


def _typed_ids(ids: np.ndarray, id_type: CellIdType) -> np.ndarray:
    if id_type == "int":
        return ids.astype(np.int64)
    text = xenium_cell_ids(ids)
    return text if id_type == "str" else np.array([t.encode() for t in text], dtype=object)


def segmentation_frame(cells: XeniumSampleCells, scale: np.ndarray | None = None) -> gpd.GeoDataFrame:
    """The cell boundaries as HEST's ``xenium_seg`` GeoDataFrame, or the nuclei with the nucleus ``scale``.

    Parameters
    ----------
    cells
        The cells.
    scale
        Per-cell factor shrinking each polygon about its centre (:attr:`XeniumSampleCells.nucleus_scale`).

    Returns
    -------
    Polygons (level-0 px, closed rings) indexed by the cell ids.
    """
    vertices = cells.vertices
    if scale is not None:
        vertices = cells.centres[:, None, :] + (vertices - cells.centres[:, None, :]) * scale[:, None, None]
    closed = np.concatenate([vertices, vertices[:, :1]], axis=1)
    # HEST's groupby_shape keeps the Xenium cell_id, whatever its type, as the (object) index
    return gpd.GeoDataFrame(geometry=shapely.polygons(closed), index=pd.Index(list(cells.ids), dtype=object))


def _write_hest_seg_geojson_zip(path: Path, gdf: gpd.GeoDataFrame) -> None:
    """``write_geojson(gdf, path, '', chunk=True)`` zipped: 10 shards named "0".."9", cell ids lost (issue #88).

    The zip holds the GeoJSON of the same name (``path`` without ``.zip``).
    """
    n = 10
    shard = np.repeat(np.arange(n), len(gdf) // n + 1)[: len(gdf)]
    rings = shapely.get_coordinates(shapely.get_exterior_ring(gdf.geometry.to_numpy()))
    per_polygon = np.split(rings, np.cumsum(shapely.get_num_coordinates(gdf.geometry.to_numpy()))[:-1])
    features = []
    for group in np.unique(shard):
        polygons = [[p.tolist()] for p, s in zip(per_polygon, shard, strict=True) if s == group]
        color = [255, int(255 * group / n), 0]
        features.append({
            "type": "Feature",
            "id": f"{id(path)}-id-{group}",
            "geometry": {"type": "MultiPolygon", "coordinates": polygons},
            "properties": {"objectType": "annotation", "classification": {"name": str(group), "color": color}},
        })  # fmt: skip
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.name.removesuffix(".zip"), json.dumps(features))


def write_xenium_seg(root: Path, sample_id: str, cells: XeniumSampleCells, *, geojson: bool) -> None:
    """Write the cell and nucleus boundaries as HEST does: ``xenium_seg/{id}_xenium_{cell,nucleus}_seg.*``.

    Parameters
    ----------
    root
        HEST root to write into.
    sample_id
        The sample id.
    cells
        The cells.
    geojson
        Also write the zipped GeoJSON shards next to the GeoParquet.
    """
    for part, scale in ((Part.XENIUM_CELLS, None), (Part.XENIUM_NUCLEI, cells.nucleus_scale)):
        spec = PARTS[part]
        parquet = spec.path(root, sample_id, 0)
        parquet.parent.mkdir(parents=True, exist_ok=True)
        gdf = segmentation_frame(cells, scale)
        gdf.to_parquet(parquet)
        if geojson:
            _write_hest_seg_geojson_zip(spec.path(root, sample_id, 1), gdf)
