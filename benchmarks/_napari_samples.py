"""HEST roots of realistic size for ``bench_napari.py``: the example sample at a chosen pixel size, with a real
HEST tissue contour (``tests/data/hest_tissue_seg/MEND90``, 28,403 vertices in 6 polygons) fitted onto its slide,
and optionally its nuclei multiplied (shrunken copies tiled) to reach a given count.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from hest_spatialdata.example import write_visium_sample
from hest_spatialdata.source.layout import PARTS, Part

REAL_CONTOUR = Path(__file__).parents[1] / "tests" / "data" / "hest_tissue_seg" / "MEND90_contours.geojson.gz"


def write_sample(root: Path, sample_id: str, pixel_size_um: float, *, nuclei_copies: int = 1) -> Path:
    """Write the example as ``sample_id`` into ``root`` with the real contour; ``nuclei_copies`` = k*k multiplies
    the nuclei by shrinking them k times and tiling k x k copies in place of each."""
    if PARTS[Part.METADATA].path(root, sample_id).is_file():
        return root
    write_visium_sample(root, sample_id, pixel_size_um=pixel_size_um)
    contour_path = PARTS[Part.TISSUE].path(root, sample_id)
    example = gpd.read_file(contour_path)
    with gzip.open(REAL_CONTOUR) as f:
        real = gpd.read_file(f)
    x0, y0, x1, y1 = real.total_bounds
    ex0, ey0, ex1, ey1 = example.total_bounds
    scale = min((ex1 - ex0) / (x1 - x0), (ey1 - ey0) / (y1 - y0))
    real["geometry"] = shapely.transform(real.geometry.values, lambda xy: (xy - [x0, y0]) * scale + [ex0, ey0])
    contour_path.unlink()
    real.to_file(contour_path, driver="GeoJSON")
    if nuclei_copies > 1:
        _multiply_nuclei(root, sample_id, int(round(np.sqrt(nuclei_copies))))
    return root


def _multiply_nuclei(root: Path, sample_id: str, k: int) -> None:
    folder = PARTS[Part.CELLVIT].path(root, sample_id).parent
    nuclei = gpd.read_parquet(folder / f"{sample_id}_cellvit_seg.parquet")
    for path in folder.glob(f"{sample_id}_cellvit_seg.*"):
        path.unlink()
    geometry = nuclei.geometry.values
    xy, owner = shapely.get_coordinates(geometry, return_index=True)
    centroid = shapely.get_coordinates(shapely.centroid(geometry))[owner]
    step = 1.2 * float(np.sqrt(np.median(shapely.area(geometry)))) / k
    parts = []
    for i in range(k):
        for j in range(k):
            offset = (np.array([i, j]) - (k - 1) / 2) * step
            moved = shapely.set_coordinates(geometry.copy(), (xy - centroid) / k + centroid + offset)
            parts.append(gpd.GeoDataFrame({"class": nuclei["class"].to_numpy()}, geometry=moved))
    frame = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry")
    frame["cell_id"] = np.arange(len(frame))
    frame.to_parquet(folder / f"{sample_id}_cellvit_seg.parquet")
