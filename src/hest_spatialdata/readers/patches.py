"""``patches/{id}.h5``: the footprints of HEST's image patches as the ``patches`` shapes element.

The h5 (``docs/hest_format.md``) holds ``img`` (N, 224, 224, 3) uint8, ``coords`` (N, 2) int64 (int32 in newer
files) = the top-left (x, y) of each source crop in level-0 px, and ``barcode`` (``barcodes`` in newer files)
(N, 1) = the spot's ``obs_names``; the dataset names are in :class:`hest_spatialdata.source.layout.PatchesKeys`. HEST
(``dump_patches`` -> hestcore ``WSIPatcher``) cuts a square of ``patch_size_src = round(patch_size * factor)``
level-0 px at ``coords`` and resizes it to ``patch_size`` px, where ``img.attrs["factor"]`` is
``target_pixel_size / src_pixel_size``. So the footprint side in level-0 px is

    side = round(patch_size * factor) = round(patch_size * target_pixel_size / slide_pixel_size)

e.g. 224 px at 0.5 µm/px on a 0.25 µm/px slide: 448 px = 112 µm. Without ``factor`` the HEST defaults are used
(``target_pixel_size`` 0.5 µm/px, the slide's ``pixel_size_um_estimated``). Only ``coords``, ``barcode`` and the
attributes are read; the images stay in the h5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import h5py
import numpy as np
import pandas as pd
import shapely
from spatialdata.models import ShapesModel

from hest_spatialdata._constants import Elements
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import check_geometries_on_slide, check_unique, reason
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.roots.remote import RemoteFile, RemoteReadError
from hest_spatialdata.source.layout import PatchesKeys

#: HEST's ``dump_patches`` defaults: 224 px patches at 0.5 µm/px.
HEST_PATCH_SIZE_PX = 224
HEST_PATCH_PIXEL_SIZE_UM = 0.5


#: Block size of a remote patches h5's reads (HDF5 reads its metadata in many small pieces).
REMOTE_H5_BLOCK = 256 * 1024


def read(path: Path, ctx: SampleContext, elements: frozenset[Elements]) -> dict[str, gpd.GeoDataFrame]:
    """Reader contract (see :mod:`hest_spatialdata.readers`): ``patches`` from ``patches/{id}.h5``."""
    return {Elements.PATCHES.value: read_patches(path, ctx)}


def read_patches(path: str | Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    """Read the footprints of a sample's HEST patches as a ``patches`` shapes element.

    Parameters
    ----------
    path
        ``patches/{id}.h5``.
    ctx
        The sample's context (slide size for the bounds check, pixel size for ``microns``).

    Returns
    -------
    One axis-aligned square per patch, ``(x, y) .. (x + side, y + side)`` level-0 px with ``side`` as in the
    module docstring, indexed by the decoded barcode, in the ``global`` and ``microns`` coordinate systems.

    Raises
    ------
    HestInputError
        If the file is missing, not HDF5 or truncated, its datasets are missing or inconsistent, barcodes repeat,
        or a patch lies entirely off the slide.
    """
    remote = isinstance(path, RemoteFile)
    path = path if remote else Path(path)
    if not path.is_file():
        raise HestInputError(ctx.sample_id, path, "patches h5 not found")
    try:
        # Only coords, barcodes and attributes are read, not the images: remotely a few blocks of a large file.
        with h5py.File(path.open(block_size=REMOTE_H5_BLOCK) if remote else path, "r") as h5:
            coords, barcodes, attrs = _read_datasets(h5, path, ctx)
    except (HestInputError, RemoteReadError):
        raise
    except Exception as e:  # h5py raises OSError, KeyError, ValueError ... on truncated files
        raise HestInputError(ctx.sample_id, path, f"patches h5 unreadable or truncated ({reason(e)})") from e
    side = patch_side_px(attrs, ctx.pixel_size_um, ctx.sample_id, path)
    x, y = coords[:, 0], coords[:, 1]
    squares = shapely.box(x, y, x + side, y + side)
    # HEST keeps patches partly off the slide and drops those entirely off it
    check_geometries_on_slide(shapely.centroid(squares), ctx, path, what="patches (coords)", tolerance_px=side / 2)
    index = pd.Index(barcodes, dtype=str)
    check_unique(index, ctx, path, what="patch barcodes")
    return ShapesModel.parse(gpd.GeoDataFrame(geometry=squares, index=index), transformations=ctx.transformations())


def patch_side_px(
    attrs: dict[str, Any], slide_pixel_size_um: float, sample_id: str | None = None, path: Any = None
) -> int:
    """Side in level-0 px of the crop HEST resized into each patch: ``round(patch_size * factor)``.

    Parameters
    ----------
    attrs
        ``img.attrs`` of the patches h5 (``patch_size``, ``factor``); missing keys take HEST's defaults.
    slide_pixel_size_um
        µm per level-0 px of the slide, used when ``factor`` is absent.
    sample_id, path
        For the error message.
    """
    patch_size = float(attrs.get(PatchesKeys.PATCH_SIZE, HEST_PATCH_SIZE_PX))
    factor = float(attrs.get(PatchesKeys.FACTOR, HEST_PATCH_PIXEL_SIZE_UM / slide_pixel_size_um))
    side = round(patch_size * factor)
    if not (np.isfinite(patch_size * factor) and side >= 1):
        raise HestInputError(
            sample_id, path, f"patch size attributes give no valid footprint (patch_size={patch_size}, factor={factor})"
        )
    return side


def _read_datasets(h5: h5py.File, path: Path, ctx: SampleContext) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    barcode_key = next((key for key in PatchesKeys.BARCODES if key in h5), PatchesKeys.BARCODES[-1])
    for name in (PatchesKeys.COORDS, barcode_key):
        if name not in h5:
            raise HestInputError(ctx.sample_id, path, f"patches h5 has no {name!r} dataset")
    coords = np.asarray(h5[PatchesKeys.COORDS][()], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise HestInputError(ctx.sample_id, path, f"patches 'coords' must be (n, 2), got {coords.shape}")
    barcode = h5[barcode_key]
    if h5py.check_string_dtype(barcode.dtype) is None:
        raise HestInputError(ctx.sample_id, path, f"patches {barcode_key!r} must hold strings, got {barcode.dtype}")
    barcodes = np.asarray(barcode.asstr()[()], dtype=object).reshape(-1)
    if len(barcodes) != len(coords):
        raise HestInputError(ctx.sample_id, path, f"patches h5 has {len(coords)} coords but {len(barcodes)} barcodes")
    attrs = dict(h5[PatchesKeys.COORDS].attrs)
    if PatchesKeys.IMAGES in h5:
        attrs |= dict(h5[PatchesKeys.IMAGES].attrs)
    return coords, barcodes, attrs
