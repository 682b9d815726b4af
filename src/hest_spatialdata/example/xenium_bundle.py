"""A raw 10x Xenium output bundle (as Xenium Onboard Analysis writes it) with a post-Xenium H&E and its alignment.

Assembled from the real Xenium mouse-brain run shipped in ``example_data`` (XOA 1.0.2, see its ``ATTRIBUTION.md``)
for :func:`hest_spatialdata.import_10x` and its tests. What is real and what is built (``docs/import.md``, "Xenium"):

- real: ``experiment.xenium`` (unchanged), ``cells.parquet`` (the real ``cells.csv.gz`` rows of the crop, its
  columns and types), ``cell_feature_matrix.h5`` (the real matrix, its cells cut to the crop, every feature kept);
- built from the real counts: ``transcripts.parquet``, one transcript per count of the real matrix (genes and
  controls, ``qv >= 20``) inside its cell, plus low-quality copies and unassigned transcripts
  (:mod:`~hest_spatialdata.example.transcripts`; 10x columns, XOA 1.x types: int ``cell_id`` with ``-1``
  unassigned, bytes ``feature_name``, µm positions); ``cell_boundaries.parquet`` / ``nucleus_boundaries.parquet``,
  polygons with the real areas around the real centroids (one row per vertex, ``cell_id, vertex_x, vertex_y`` in
  µm, rings closed); ``cells.zarr.zip`` with ``cell_id`` and ``cell_summary`` only (spatialdata-io opens it; the
  label masks are left out, the import does not read them);
- built: the post-Xenium H&E (``he_image.tif``, a pyramidal TIFF of the real H&E texture over the tissue) and its
  ``he_imagealignment.csv``, a 3 x 3 affine from H&E px to Xenium morphology px (Xenium Explorer's convention) with
  a rotation, a scale (H&E pixel size / 0.2125 µm) and a shift, so that the warp is tested.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from hest_spatialdata.example.common import VisiumLayout
from hest_spatialdata.example.slide import he_texture, write_slide
from hest_spatialdata.example.sources import example_data_path, xenium_mouse_brain
from hest_spatialdata.example.transcripts import TranscriptWriter, write_cell_chunk
from hest_spatialdata.example.xenium import _cells_mask
from hest_spatialdata.example.xenium_cells import XeniumSampleCells, xenium_cells_in, xenium_sample_cells

#: A 350 µm square of cortex: about 400 cells and 120k transcripts.
BUNDLE_CROP_UM = (1500.0, 1500.0, 1850.0, 1850.0)
BUNDLE_HE_PIXEL_SIZE_UM = 0.5
BUNDLE_ROTATION_DEG = 20.0
BUNDLE_HE_IMAGE = "he_image.tif"
BUNDLE_ALIGNMENT = "he_imagealignment.csv"
_MARGIN_UM = 120.0


@dataclass(frozen=True)
class XeniumBundle:
    """Where the bundle was written and how its H&E sits on the Xenium frame."""

    path: Path  # the Xenium output folder
    image: Path  # the post-Xenium H&E
    alignment: Path  # Xenium Explorer's matrix CSV
    matrix: np.ndarray  # H&E px -> morphology px
    he_pixel_size_um: float
    cell_ids: np.ndarray  # the real cell ids of the crop (int)


def write_xenium_bundle(
    out_dir: str | Path,
    *,
    crop_um: tuple[float, float, float, float] = BUNDLE_CROP_UM,
    he_pixel_size_um: float = BUNDLE_HE_PIXEL_SIZE_UM,
    rotation_deg: float = BUNDLE_ROTATION_DEG,
    row_group_size: int = 50_000,
    seed: int = 0,
) -> XeniumBundle:
    """Write a Xenium output bundle of the real mouse-brain cells in ``crop_um``, with an aligned H&E.

    Parameters
    ----------
    out_dir
        The folder to write (created); the H&E and its alignment CSV are written into it too.
    crop_um
        ``(x0, y0, x1, y1)`` in Xenium µm: the cells whose centroid is inside.
    he_pixel_size_um
        µm per pixel of the H&E.
    rotation_deg
        Rotation of the Xenium frame on the H&E.
    row_group_size
        Parquet row group size of the transcripts.
    seed
        Random seed (polygons, transcript positions, H&E texture).

    Returns
    -------
    The bundle's paths and its alignment.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = xenium_cells_in(crop_um)
    if not len(rows):
        raise ValueError(f"no Xenium cell in the crop {crop_um}")
    real = xenium_mouse_brain()
    shutil.copyfile(example_data_path("xenium_mouse_brain.experiment.xenium"), out / "experiment.xenium")
    cells_table = real.cells.iloc[rows]
    cells_table.to_parquet(out / "cells.parquet", index=False)
    _write_feature_matrix_subset(out / "cell_feature_matrix.h5", rows)
    x1, y1 = crop_um[2] + _MARGIN_UM, crop_um[3] + _MARGIN_UM
    frame = VisiumLayout(1.0, (0.0, 0.0), math.ceil(y1), math.ceil(x1))  # the Xenium frame, in µm
    cells = xenium_sample_cells(rows, frame, "int", seed)
    _write_boundaries(out, cells)
    _write_cells_zarr(out / "cells.zarr.zip", cells_table)
    writer = TranscriptWriter(out / "transcripts.parquet", cells, id_type="int", geometry=False,
                              row_group_size=row_group_size, hest_columns=False)  # fmt: skip
    rng = np.random.default_rng(seed)
    for chunk in np.array_split(np.arange(len(rows)), max(1, len(rows) // 4096)):
        write_cell_chunk(writer, cells, chunk, frame, rng, unassigned_fraction=0.08, low_qv_fraction=0.03)
    writer.close()
    morph = float(real.experiment["pixel_size"])
    matrix, shape = _alignment(crop_um, he_pixel_size_um, rotation_deg, morph)
    np.savetxt(out / BUNDLE_ALIGNMENT, matrix, delimiter=",", fmt="%.17g")
    he_centres = _to_he(matrix, morph, cells.centres)
    layout = VisiumLayout(he_pixel_size_um, (0.0, 0.0), *shape)
    slide = he_texture(*shape, seed=seed, tissue_mask=_cells_mask(layout, he_centres))
    write_slide(out / BUNDLE_HE_IMAGE, slide, he_pixel_size_um, writer="tifffile")
    ids = cells_table["cell_id"].to_numpy()
    return XeniumBundle(out, out / BUNDLE_HE_IMAGE, out / BUNDLE_ALIGNMENT, matrix, he_pixel_size_um, ids)


def _alignment(
    crop_um: tuple[float, float, float, float], he_px_um: float, rotation_deg: float, morph_px_um: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """The H&E px -> morphology px matrix putting the crop, rotated, in the middle of an H&E; and its (h, w)."""
    theta = math.radians(rotation_deg)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    side = max(crop_um[2] - crop_um[0], crop_um[3] - crop_um[1])
    extent_um = side * (abs(math.cos(theta)) + abs(math.sin(theta))) + 2 * _MARGIN_UM
    height = width = math.ceil(extent_um / he_px_um)
    centre_um = np.array([(crop_um[0] + crop_um[2]) / 2, (crop_um[1] + crop_um[3]) / 2])
    centre_he = np.array([width / 2, height / 2])
    # µm = rotation @ (he - centre_he) * he_px_um + centre_um; morphology px = µm / morph_px_um
    linear = rotation * he_px_um / morph_px_um
    shift = centre_um / morph_px_um - linear @ centre_he
    return np.vstack([np.column_stack([linear, shift]), [0.0, 0.0, 1.0]]), (height, width)


def _to_he(matrix: np.ndarray, morph_px_um: float, xy_um: np.ndarray) -> np.ndarray:
    inverse = np.linalg.inv(matrix)
    morph = np.column_stack([xy_um / morph_px_um, np.ones(len(xy_um))])
    return (inverse @ morph.T).T[:, :2]


def _write_feature_matrix_subset(path: Path, rows: np.ndarray) -> None:
    """The real ``cell_feature_matrix.h5`` with only the cells ``rows`` (10x's HDF5 layout, every feature kept)."""
    with h5py.File(example_data_path("xenium_mouse_brain_cell_feature_matrix.h5"), "r") as src, \
            h5py.File(path, "w") as dst:  # fmt: skip
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        m = src["matrix"]
        indptr = m["indptr"][:]
        starts, ends = indptr[rows], indptr[rows + 1]
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])
        out = dst.create_group("matrix")
        out.create_dataset("barcodes", data=m["barcodes"][:][rows])
        out.create_dataset("data", data=m["data"][:][take], compression="gzip")
        out.create_dataset("indices", data=m["indices"][:][take], compression="gzip")
        out.create_dataset("indptr", data=np.concatenate([[0], np.cumsum(ends - starts)]).astype(indptr.dtype))
        out.create_dataset("shape", data=np.array([m["shape"][0], len(rows)], dtype=m["shape"].dtype))
        src.copy(m["features"], out, name="features")


def _write_boundaries(out: Path, cells: XeniumSampleCells) -> None:
    """``cell_boundaries.parquet`` and ``nucleus_boundaries.parquet``: one row per vertex, rings closed, µm."""
    for name, scale in (("cell_boundaries.parquet", None), ("nucleus_boundaries.parquet", cells.nucleus_scale)):
        vertices = cells.vertices
        if scale is not None:
            vertices = cells.centres[:, None, :] + (vertices - cells.centres[:, None, :]) * scale[:, None, None]
        closed = np.concatenate([vertices, vertices[:, :1]], axis=1)
        k = closed.shape[1]
        pd.DataFrame({
            "cell_id": np.repeat(cells.ids.astype(np.int64), k),
            "vertex_x": closed[..., 0].ravel().astype(np.float32),
            "vertex_y": closed[..., 1].ravel().astype(np.float32),
        }).to_parquet(out / name, index=False)  # fmt: skip


def _write_cells_zarr(path: Path, cells: pd.DataFrame) -> None:
    """A ``cells.zarr.zip`` with XOA 1.0's ``cell_id`` and ``cell_summary`` arrays (no masks)."""
    import zarr

    columns = ["cell_centroid_x", "cell_centroid_y", "cell_area", "nucleus_centroid_x", "nucleus_centroid_y",
               "nucleus_area", "z_level"]  # fmt: skip
    summary = np.column_stack([
        cells["x_centroid"], cells["y_centroid"], cells["cell_area"], cells["x_centroid"], cells["y_centroid"],
        cells["nucleus_area"], np.zeros(len(cells)),
    ]).astype(np.float64)  # fmt: skip
    store = zarr.storage.ZipStore(path, mode="w")
    try:
        # every attribute given at creation: a zip member cannot be rewritten
        attributes = {"major_version": 3, "minor_version": 0, "number_cells": len(cells)}
        root = zarr.open_group(store, mode="w", zarr_format=2, attributes=attributes)
        root.create_array("cell_id", data=cells["cell_id"].to_numpy().astype(np.uint32))
        root.create_array("cell_summary", data=summary, attributes={"column_names": columns})
    finally:
        store.close()
