"""The real parts the example is built from, shipped in ``hest_spatialdata/example_data`` (see its ``ATTRIBUTION.md``).

A real 10x Xenium mouse-brain run (cells, cell x feature matrix, ``experiment.xenium``), a real H&E tile, the real
Visium v1 barcode whitelist, a real HEST metadata JSON and two tiles of real nuclei in HEST's CellViT layout.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any

import geopandas as gpd
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely
from PIL import Image

_DATA = package_files("hest_spatialdata") / "example_data"
#: The real nuclei tiles (``example_data/ATTRIBUTION.md``): HEST-layout CellViT GeoJSON, 2000 x 2000 px each.
NUCLEI_TILE_FILES = ("gland_cells_hest_cellvit_seg.geojson.gz", "ts_iface_cells_hest_cellvit_seg.geojson.gz")
NUCLEI_TILE_SIDE_PX = 2000
#: µm per px assumed for the nuclei tiles (their source does not state it): nuclei are then ~8 µm across and the
#: example tissue holds ~40k of them, close to the 36,602 real Xenium cells of the same tissue.
NUCLEI_TILE_PIXEL_SIZE_UM = 0.35


def example_data_path(name: str) -> Path:
    """Path of a file shipped in ``hest_spatialdata/example_data``.

    Parameters
    ----------
    name
        The file name, e.g. ``he_tile.jpg``.

    Returns
    -------
    Its path in the installed package.
    """
    return Path(str(_DATA / name))


@dataclass(frozen=True)
class XeniumCells:
    """The real Xenium mouse-brain run: cell centroids and areas (µm) and the cell x gene counts."""

    cells: pd.DataFrame  # cell_id, x_centroid, y_centroid, cell_area, nucleus_area (µm, µm²)
    counts: sp.csr_matrix  # cells x genes, Gene Expression features only
    genes: pd.Index
    experiment: dict[str, Any]


@cache
def xenium_mouse_brain() -> XeniumCells:
    """Load the real Xenium mouse-brain cells shipped with the package (10x, CC BY 4.0)."""
    cells = pd.read_csv(example_data_path("xenium_mouse_brain_cells.csv.gz"))
    with h5py.File(example_data_path("xenium_mouse_brain_cell_feature_matrix.h5"), "r") as f:
        m = f["matrix"]
        shape = tuple(m["shape"][:])  # (features, cells)
        matrix = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=shape)
        names = m["features/name"][:].astype(str)
        kinds = m["features/feature_type"][:].astype(str)
        barcodes = m["barcodes"][:].astype(str)
    if not (barcodes == cells["cell_id"].astype(str).to_numpy()).all():
        raise ValueError("cells.csv.gz and cell_feature_matrix.h5 disagree on the cell order")
    genes = kinds == "Gene Expression"
    counts = matrix.T.tocsr()[:, np.flatnonzero(genes)]
    experiment = json.loads(example_data_path("xenium_mouse_brain.experiment.xenium").read_text())
    return XeniumCells(cells=cells, counts=counts, genes=pd.Index(names[genes]), experiment=experiment)


@cache
def he_tile() -> np.ndarray:
    """A real 1000 x 1000 RGB H&E tile."""
    return np.asarray(Image.open(example_data_path("he_tile.jpg")).convert("RGB"))


def visium_whitelist() -> pd.DataFrame:
    """The 4,992 real Visium v1 barcodes with their array column and row (0-based)."""
    table = pd.read_csv(example_data_path("visium-v1_coordinates.txt"), sep="\t", header=None, names=["b", "c", "r"])
    return pd.DataFrame({"barcode": table["b"] + "-1", "array_col": table["c"] - 1, "array_row": table["r"] - 1})


def hest_metadata_template() -> dict[str, Any]:
    """A real HEST ``metadata/{id}.json`` (ZEN61, Visium mouse brain), NaN kept as float NaN."""
    return json.loads(example_data_path("ZEN61_metadata.json").read_text())


@cache
def nuclei_tiles() -> tuple[gpd.GeoDataFrame, ...]:
    """The real nuclei tiles: polygons in tile px (0..2000) with their CellViT ``class``."""
    tiles = []
    for name in NUCLEI_TILE_FILES:
        with gzip.open(example_data_path(name), "rt", encoding="utf-8") as file:
            features = json.load(file)
        polygons = [shapely.Polygon(p[0]) for f in features for p in f["geometry"]["coordinates"]]
        classes = [f["properties"]["classification"]["name"] for f in features for _ in f["geometry"]["coordinates"]]
        tiles.append(gpd.GeoDataFrame({"class": classes}, geometry=polygons))
    return tuple(tiles)


@dataclass(frozen=True)
class XeniumFeatures:
    """The real Xenium mouse-brain cell x feature matrix with its control features (541 features)."""

    counts: sp.csr_matrix  # cells x features, same cell order as ``xenium_mouse_brain().cells``
    names: pd.Index
    types: np.ndarray  # 10x feature_type: "Gene Expression", "Blank Codeword", "Negative Control Probe", ...


@cache
def xenium_mouse_brain_features() -> XeniumFeatures:
    """Load every feature of the real Xenium mouse-brain matrix, control probes and codewords included."""
    with h5py.File(example_data_path("xenium_mouse_brain_cell_feature_matrix.h5"), "r") as f:
        m = f["matrix"]
        shape = tuple(m["shape"][:])
        matrix = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=shape)
        names = m["features/name"][:].astype(str)
        types = m["features/feature_type"][:].astype(str)
    return XeniumFeatures(counts=matrix.T.tocsr(), names=pd.Index(names), types=types)
