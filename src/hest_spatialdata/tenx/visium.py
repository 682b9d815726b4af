"""Visium (Space Ranger ``outs/``): spots, counts and pixel size as HEST's ``VisiumReader`` reads them.

The files are read by spatialdata-io's ``visium`` reader (counts: the filtered h5, else the raw h5, else a
MatrixMarket folder, HEST's order; positions joined by barcode; scale factors). What HEST then does:

- the spot centres are ``pxl_col_in_fullres, pxl_row_in_fullres`` (x, y) in level-0 px of the full-resolution
  H&E; with ``--alignment`` (a Loupe alignment JSON) they are replaced by its ``imageX, imageY``, joined on the
  array row and column (``VisiumReader._align_tissue_positions``);
- ``pixel_size_um_estimated`` comes from the spots' spacing: 100 µm between neighbouring centres of a row
  (:func:`hest_pixel_size`, HEST's ``find_pixel_size_from_spot_coords``), never from the TIFF's tags nor from
  ``spot_diameter_fullres`` (which is the 65 µm circle Space Ranger draws, not the 55 µm spot);
- the metadata: the ``metrics_summary.csv`` row, ``spot_diameter`` 55, ``inter_spot_dist`` 100,
  ``spot_estimate_dist``.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hest_spatialdata._constants import Technology
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import reason
from hest_spatialdata.tenx import _files as files
from hest_spatialdata.tenx._detect import counts_source
from hest_spatialdata.tenx._run import ImportRequest, TenxRun, read_metrics

TECHNOLOGY = Technology.VISIUM
#: HEST's Visium constants (``VisiumReader.read``): the spot's diameter and the distance between neighbours, µm.
SPOT_DIAMETER_UM = 55.0
INTER_SPOT_DIST_UM = 100.0
#: The circle Space Ranger's ``spot_diameter_fullres`` measures (µm): the 55 µm spot with a margin.
SPACERANGER_SPOT_CIRCLE_UM = 65.0
#: Chemistries of a Visium (not HD) counts h5 (``chemistry_description``); Space Ranger 1 wrote Single Cell 3' names.
VISIUM_CHEMISTRY = re.compile(r"spatial|visium|single cell 3'|custom|auto", re.IGNORECASE)
#: How far (hires or lowres px) Space Ranger's image may be from the H&E scaled by its scale factor.
IMAGE_SIZE_TOLERANCE_PX = 2.0

log = logging.getLogger(__name__)


def read_run(request: ImportRequest, slide_shape: tuple[int, int]) -> TenxRun:
    """Read a Space Ranger ``outs/`` folder (the contract in :mod:`hest_spatialdata.tenx`).

    Raises
    ------
    HestInputError
        For missing or unreadable files, a chemistry that is not Visium's, barcodes without positions, or an H&E
        whose size does not match the scale factors.
    """
    folder, sample_id = request.folder, request.sample_id
    counts = counts_source(folder)
    positions = positions_file(folder, sample_id)
    scalefactors_path = folder / files.SPATIAL / files.SCALEFACTORS
    scalefactors = read_scalefactors(scalefactors_path, sample_id)
    table = read_counts(folder, counts, sample_id)
    check_chemistry(_table_chemistry(table), counts, sample_id, TECHNOLOGY)
    check_image_size(folder, scalefactors, slide_shape, request.image, sample_id)
    missing = np.isnan(np.asarray(table.obsm["spatial"], dtype=float)).any(axis=1)
    if missing.any():
        raise HestInputError(
            sample_id,
            positions,
            f"{missing.sum()} barcodes of {counts.name} have no position, e.g. {table.obs_names[np.argmax(missing)]}",
        )
    obs = table.obs[["in_tissue", "array_row", "array_col"]].copy()
    centres = np.asarray(table.obsm["spatial"], dtype=np.float64)
    if request.alignment is not None:
        centres = aligned_centres(request.alignment, obs, sample_id)
    obs["pxl_col_in_fullres"], obs["pxl_row_in_fullres"] = centres[:, 0], centres[:, 1]
    pixel_size, spot_estimate_dist = hest_pixel_size(obs, INTER_SPOT_DIST_UM, sample_id, positions)
    _check_spot_circle(scalefactors, pixel_size, sample_id, scalefactors_path)
    table.obs = obs
    table.obsm["spatial"] = centres
    metrics_path = folder / files.METRICS
    metadata = read_metrics(metrics_path, sample_id) | {
        "spot_diameter": SPOT_DIAMETER_UM,
        "inter_spot_dist": INTER_SPOT_DIST_UM,
        "spot_estimate_dist": int(spot_estimate_dist),
    }
    sources = {"counts": counts, "tissue_positions": positions, "scalefactors": scalefactors_path}
    if metrics_path.is_file():
        sources["metrics"] = metrics_path
    if request.alignment is not None:
        sources["alignment"] = request.alignment
    return TenxRun(TECHNOLOGY, pixel_size, centres, table, metadata, sources, request.alignment or positions)


def positions_file(folder: Path, sample_id: str) -> Path:
    """``spatial/tissue_positions.csv`` (Space Ranger >= 2) or ``tissue_positions_list.csv`` (Space Ranger 1)."""
    for name in files.TISSUE_POSITIONS:
        if (folder / files.SPATIAL / name).is_file():
            return folder / files.SPATIAL / name
    raise HestInputError(sample_id, folder / files.SPATIAL, f"no {' or '.join(files.TISSUE_POSITIONS)} in spatial/")


def read_scalefactors(path: Path, sample_id: str) -> dict[str, float]:
    """Space Ranger's ``scalefactors_json.json``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HestInputError(sample_id, path, "scale factors not found") from None
    except (OSError, ValueError) as e:
        raise HestInputError(sample_id, path, f"scale factors unreadable ({reason(e)})") from e


def read_counts(folder: Path, counts: Path | None, sample_id: str) -> Any:
    """The counts and positions through spatialdata-io's ``visium`` reader: its table, with ``obsm["spatial"]``."""
    import spatialdata_io

    if counts is None:
        raise HestInputError(sample_id, folder, "no counts (filtered/raw h5 or MatrixMarket folder)")
    kwargs: dict[str, Any] = {}
    if counts.is_dir():
        # spatialdata-io reads a MatrixMarket folder through scanpy's read_10x_mtx given "<folder>/matrix.mtx.gz";
        # scanpy reads uncompressed files (as older Space Ranger runs and subsets hold them) with compressed=False
        counts_file = f"{counts.name}/{files.MEX_MATRIX[0]}"
        if not (counts / files.MEX_MATRIX[0]).is_file():
            kwargs["compressed"] = False
    else:
        counts_file = counts.name
    try:
        with warnings.catch_warnings():  # its table's region column, a string it parses into a category
            warnings.filterwarnings("ignore", "Converting `region_key", UserWarning)
            sdata = spatialdata_io.visium(folder, dataset_id=sample_id, counts_file=counts_file, **kwargs)
    except HestInputError:
        raise
    except Exception as e:  # spatialdata-io, scanpy and h5py raise many types on bad files
        raise HestInputError(sample_id, counts, f"Space Ranger output unreadable ({reason(e)})") from e
    table = sdata.tables["table"]
    table.uns.pop("spatialdata_attrs", None)
    return table


def check_chemistry(chemistry: str | None, counts: Path, sample_id: str, technology: Technology) -> None:
    """Refuse counts whose ``chemistry_description`` is not the technology's (e.g. a Cell Ranger 5' run).

    ``None`` (a MatrixMarket folder has no attributes) passes.
    """
    if chemistry is None:
        return
    is_hd = "hd" in chemistry.lower().split()
    if not VISIUM_CHEMISTRY.search(chemistry) or is_hd != (technology is Technology.VISIUM_HD):
        raise HestInputError(
            sample_id, counts, f"unknown chemistry {chemistry!r} for {technology.value} (chemistry_description)"
        )


def _table_chemistry(table: Any) -> str | None:
    """The ``chemistry_description`` spatialdata-io copied from the counts h5 (``uns["spatial"]``), removed."""
    spatial = table.uns.pop("spatial", {})
    found = next((v.get("metadata", {}).get("chemistry_description") for v in spatial.values()), None)
    return None if found is None else str(found)


def check_image_size(
    folder: Path, scalefactors: dict[str, float], slide_shape: tuple[int, int], image: Path, sample_id: str
) -> None:
    """Refuse an H&E whose size, scaled by Space Ranger's scale factors, is not the hires or lowres PNG's.

    Space Ranger made ``tissue_hires_image.png`` (``tissue_lowres_image.png``) by scaling the full-resolution
    image by ``tissue_hires_scalef`` (``tissue_lowres_scalef``): another image is not the one the spots are on.
    """
    from PIL import Image

    for png, key in (
        ("tissue_hires_image.png", "tissue_hires_scalef"),
        ("tissue_lowres_image.png", "tissue_lowres_scalef"),
    ):
        path = folder / files.SPATIAL / png
        if not path.is_file() or key not in scalefactors:
            continue
        with Image.open(path) as im:
            width, height = im.size
        scale = float(scalefactors[key])
        expected = (slide_shape[1] * scale, slide_shape[0] * scale)
        if max(abs(width - expected[0]), abs(height - expected[1])) > IMAGE_SIZE_TOLERANCE_PX:
            raise HestInputError(
                sample_id,
                image,
                f"the H&E is {slide_shape[1]} x {slide_shape[0]} px, but Space Ranger's {png} ({width} x {height} px, "
                f"{key} {scale:g}) was made from a {width / scale:.0f} x {height / scale:.0f} px image: "
                "not the image the spots were placed on",
            )


def aligned_centres(alignment: Path, obs: pd.DataFrame, sample_id: str) -> np.ndarray:
    """Spot centres from a Loupe alignment JSON (``oligo``: row, col, imageX, imageY), joined on array row/col.

    As HEST's ``VisiumReader._alignment_file_to_df``: a CytAssist ``transformImages`` matrix is inverted and applied.
    """
    try:
        data = json.loads(alignment.read_text(encoding="utf-8"))
        oligo = pd.DataFrame(data["oligo"])[["row", "col", "imageX", "imageY"]]
    except Exception as e:  # missing file, not JSON, no oligo list
        raise HestInputError(
            sample_id, alignment, f"not a Loupe alignment JSON with 'oligo' spots ({reason(e)})"
        ) from e
    xy = oligo[["imageX", "imageY"]].to_numpy(dtype=np.float64)
    if "cytAssistInfo" in data:
        transform = np.linalg.inv(np.asarray(data["cytAssistInfo"]["transformImages"], dtype=np.float64))
        xy = (transform @ np.column_stack([xy, np.ones(len(xy))]).T).T[:, :2]
    lookup = pd.DataFrame(xy, columns=["x", "y"], index=pd.MultiIndex.from_arrays([oligo["row"], oligo["col"]]))
    lookup = lookup[~lookup.index.duplicated()]
    keys = pd.MultiIndex.from_arrays([obs["array_row"].astype(int), obs["array_col"].astype(int)])
    joined = lookup.reindex(keys)
    if joined.isna().any(axis=None):
        raise HestInputError(
            sample_id, alignment, f"{int(joined.isna().any(axis=1).sum())} spots are not in the alignment"
        )
    return joined.to_numpy(dtype=np.float64)


def hest_pixel_size(
    obs: pd.DataFrame, inter_spot_dist: float, sample_id: str, path: Path, *, grid: bool = False
) -> tuple[float, int]:
    """µm per px from the spots' spacing, as HEST's ``find_pixel_size_from_spot_coords``.

    The spots in ``array_row`` order (pandas' default sort, as HEST); for each of the first four spots that share
    their row with another, the distance to the row's spot of largest ``array_col``; the estimate over the most
    spots between the two is kept: ``inter_spot_dist / (distance px / spots between)``. Visium's columns step by 2
    in a row (orange-crate packing, ``grid=False``); Visium HD's bins by 1 (``grid=True``).

    Returns
    -------
    ``(pixel size, spots between the two spots used)``.

    Raises
    ------
    HestInputError
        If no two spots share a row.
    """
    columns = ["array_row", "array_col", "pxl_col_in_fullres", "pxl_row_in_fullres"]
    df = obs[columns].reset_index(drop=True).sort_values("array_row")
    rows = df.groupby("array_row")["array_col"]
    size, last = rows.transform("size").to_numpy(), rows.transform("idxmax").to_numpy()
    best, widest = 0.0, 0
    for position in np.flatnonzero(size > 1)[:4]:  # HEST stops after four estimates
        start, end = df.iloc[position], df.loc[last[position]]
        distance = float(
            np.hypot(
                start["pxl_col_in_fullres"] - end["pxl_col_in_fullres"],
                start["pxl_row_in_fullres"] - end["pxl_row_in_fullres"],
            )
        )
        between = abs(int(end["array_col"]) - int(start["array_col"])) // (1 if grid else 2)
        if between > widest:
            widest, best = between, inter_spot_dist / (distance / between)
    if widest == 0:
        raise HestInputError(sample_id, path, "cannot derive the pixel size: no two spots on the same row")
    return best, widest


def _check_spot_circle(scalefactors: dict[str, float], pixel_size: float, sample_id: str, path: Path) -> None:
    """Warn when Space Ranger's 65 µm circle disagrees with the pixel size from the spacing (a wrong file?)."""
    diameter = scalefactors.get("spot_diameter_fullres")
    if not diameter:
        return
    implied = SPACERANGER_SPOT_CIRCLE_UM / float(diameter)
    if abs(implied / pixel_size - 1) > 0.1:
        log.warning(
            "sample %s (%s): spot_diameter_fullres implies %.4f µm/px, the spots' spacing %.4f µm/px",
            sample_id, path, implied, pixel_size,
        )  # fmt: skip
