"""Visium HD (Space Ranger HD ``outs/``): the 16 µm bins pooled into 128 µm squares, as HEST's ``VisiumHDReader``.

The bins are read by spatialdata-io's ``visium_hd`` reader (``binned_outputs/square_016um/``: the filtered counts
h5 and ``spatial/tissue_positions.parquet``, joined by barcode). HEST then:

- derives ``pixel_size_um_estimated`` from the 16 µm bins' spacing (grid packing, 16 µm between neighbours of a
  row: HEST's ``find_pixel_size_from_spot_coords``, :func:`hest_spatialdata.tenx.visium.hest_pixel_size`);
- sums the 16 µm bins into 128 µm squares (``pool_bins_visiumhd``, :func:`pool_bins`): a grid from the bins'
  smallest centre, empty squares dropped, centres at the squares' middles, rows named ``rrrrxcccc`` as HEST names
  them (from the square's position among the kept ones: HEST's naming, kept so that names match HEST-1k's);
- takes ``spots_under_tissue`` as the number of squares and the metrics CSV as the metadata.

HEST's pooled ``X`` is a dense float32 matrix; here it is the same values as a sparse float32 matrix.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hest_spatialdata._constants import Technology
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import reason
from hest_spatialdata.tenx import _files as files
from hest_spatialdata.tenx._run import ImportRequest, TenxRun, read_metrics
from hest_spatialdata.tenx.visium import check_chemistry, check_image_size, hest_pixel_size, read_scalefactors

TECHNOLOGY = Technology.VISIUM_HD
#: HEST pools the 16 µm bins into 128 µm squares.
SOURCE_BIN_UM = 16
POOLED_BIN_UM = 128


def read_run(request: ImportRequest, slide_shape: tuple[int, int]) -> TenxRun:
    """Read a Space Ranger HD ``outs/`` folder (the contract in :mod:`hest_spatialdata.tenx`).

    Raises
    ------
    HestInputError
        Without the 16 µm bins, for unreadable files, a chemistry that is not Visium HD's, or an H&E whose size
        does not match the scale factors.
    """
    folder, sample_id = request.folder, request.sample_id
    if request.alignment is not None:
        raise HestInputError(sample_id, request.alignment, "--alignment applies to Visium and Xenium, not Visium HD")
    bins = folder / files.BINNED_OUTPUTS / files.HD_BIN_FOLDER.format(size=SOURCE_BIN_UM)
    counts = bins / files.FILTERED_H5
    positions = bins / files.SPATIAL / files.TISSUE_POSITIONS_PARQUET
    for needed in (counts, positions):
        if not needed.is_file():
            raise HestInputError(sample_id, needed, f"HEST pools the {SOURCE_BIN_UM} µm bins: this file is missing")
    scalefactors_path = bins / files.SPATIAL / files.SCALEFACTORS
    scalefactors = read_scalefactors(scalefactors_path, sample_id)
    check_chemistry(_chemistry(counts, sample_id), counts, sample_id, TECHNOLOGY)
    check_image_size(folder, scalefactors, slide_shape, request.image, sample_id)
    table = _read_bins(folder, sample_id, counts)
    obs = table.obs[["in_tissue", "array_row", "array_col"]].copy()
    centres = np.asarray(table.obsm["spatial"], dtype=np.float64)
    obs["pxl_col_in_fullres"], obs["pxl_row_in_fullres"] = centres[:, 0], centres[:, 1]
    pixel_size, _ = hest_pixel_size(obs, float(SOURCE_BIN_UM), sample_id, positions, grid=True)
    table.obs = obs
    pooled = pool_bins(table, pixel_size)
    metrics_path = folder / files.METRICS
    sources = {"counts": counts, "tissue_positions": positions, "scalefactors": scalefactors_path}
    if metrics_path.is_file():
        sources["metrics"] = metrics_path
    centres = np.asarray(pooled.obsm["spatial"], dtype=np.float64)
    return TenxRun(TECHNOLOGY, pixel_size, centres, pooled, read_metrics(metrics_path, sample_id), sources, positions)


def _chemistry(counts: Path, sample_id: str) -> str | None:
    import h5py

    try:
        with h5py.File(counts, "r") as f:
            value = f.attrs.get("chemistry_description")
    except OSError as e:
        raise HestInputError(sample_id, counts, f"counts h5 unreadable ({reason(e)})") from e
    if value is None:
        return None
    value = np.asarray(value).ravel()[0] if np.ndim(value) else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_bins(folder: Path, sample_id: str, counts: Path) -> Any:
    """The 16 µm bins through spatialdata-io's ``visium_hd``: their table, with ``obsm["spatial"]`` (x, y px)."""
    import spatialdata_io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no full-resolution image in outs/: the H&E is the user's
            sdata = spatialdata_io.visium_hd(
                folder, dataset_id=sample_id, bin_size=SOURCE_BIN_UM, load_segmentations_only=False, gex_only=True
            )
    except Exception as e:  # spatialdata-io, scanpy, h5py and pyarrow raise many types on bad files
        raise HestInputError(sample_id, counts, f"Space Ranger HD output unreadable ({reason(e)})") from e
    table = sdata.tables[files.HD_BIN_FOLDER.format(size=SOURCE_BIN_UM)]
    table.uns.pop("spatialdata_attrs", None)
    return table


def pool_bins(adata: Any, pixel_size: float, dst_um: float = POOLED_BIN_UM, src_um: float = SOURCE_BIN_UM) -> Any:
    """Sum bins into ``dst_um`` squares as HEST's ``pool_bins_visiumhd`` does (its arithmetic, sparse).

    Parameters
    ----------
    adata
        The bins: ``obs["pxl_col_in_fullres"]``, ``obs["pxl_row_in_fullres"]`` their centres (level-0 px), ``X``.
    pixel_size
        µm per level-0 px.
    dst_um, src_um
        The squares' and the bins' side in µm.

    Returns
    -------
    The squares: ``X`` the summed counts (float32), ``obsm["spatial"]`` their centres, HEST's ``obs`` and names.
    """
    import anndata as ad

    x = adata.obs["pxl_col_in_fullres"].to_numpy(dtype=np.float64)
    y = adata.obs["pxl_row_in_fullres"].to_numpy(dtype=np.float64)
    src_px, dst_px = src_um / pixel_size, dst_um / pixel_size
    m = math.ceil((y.max() - y.min() + src_px) / dst_px)
    n = math.ceil((x.max() - x.min() + src_px) / dst_px)
    a = np.floor((x - x.min() + src_px // 2) / dst_px).astype(int)
    b = np.floor((y - y.min() + src_px // 2) / dst_px).astype(int)
    square = b * n + a
    pooling = sp.csr_matrix(
        (np.ones(len(square), np.float32), (square, np.arange(len(square)))), shape=(m * n, len(square))
    )
    summed = (pooling @ sp.csr_matrix(adata.X, dtype=np.float32)).tocsr()
    kept = np.flatnonzero(np.asarray(summed.sum(axis=1)).ravel() > 1e-8)
    pos_x = x.min() + (kept % n) * dst_px + dst_px // 2
    pos_y = y.min() + np.floor(kept / n) * dst_px + dst_px // 2
    order = np.arange(len(kept))  # HEST names the squares from their position among the kept ones
    obs = pd.DataFrame({
        "in_tissue": True, "pxl_col_in_fullres": pos_x, "pxl_row_in_fullres": pos_y,
        "array_col": order % n, "array_row": order // n,
    })  # fmt: skip
    obs.index = [f"{row:04d}x{col:04d}" for row, col in zip(obs["array_row"], obs["array_col"], strict=True)]
    pooled = ad.AnnData(X=summed[kept], obs=obs, var=adata.var.copy())
    pooled.obsm["spatial"] = np.column_stack([pos_x, pos_y])
    return pooled
