"""A store as the "legacy" spatial AnnData of scanpy's tutorials (``sc.pl.spatial``), on spatialdata-io.

spatialdata-io's :func:`spatialdata_io.experimental.to_legacy_anndata` gives the table with ``obsm["spatial"]``
(the spot centres in the chosen coordinate system). Its own images are re-rendered, re-origined copies whose
``obsm["spatial"]`` no longer is the slide's pixels, so the images here are taken from the store's pyramid
instead: the level nearest below each target size, with the scale factors that map level-0 pixels onto it, the
way Space Ranger's ``tissue_hires_image.png`` / ``tissue_lowres_image.png`` and ``scalefactors_json.json`` do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hest_spatialdata._constants import ATTRS_KEY, CoordinateSystems, Elements

if TYPE_CHECKING:
    import anndata as ad
    from spatialdata import SpatialData

#: Longest side of the ``hires`` and ``lowres`` images (Space Ranger's 2000 and 600 px).
HIRES_MAX_PX = 2000
LOWRES_MAX_PX = 600


def to_legacy_anndata(
    store: str | Path | SpatialData,
    *,
    library_id: str | None = None,
    table: str = Elements.TABLE.value,
    image: str = Elements.HE.value,
) -> ad.AnnData:
    """The spot table as a legacy spatial AnnData that ``sc.pl.spatial(adata, color=gene)`` draws unchanged.

    Built on :func:`spatialdata_io.experimental.to_legacy_anndata` (``coordinate_system="global"``, the table and
    the spots it annotates), then one library is added from the store's own pyramid.

    Parameters
    ----------
    store
        A converted store (path) or a :class:`spatialdata.SpatialData` read from one.
    library_id
        Key of the library in ``uns["spatial"]``; the sample id by default.
    table
        The table to convert (it must annotate one shapes element).
    image
        The H&E image element.

    Returns
    -------
    The table's AnnData (``X`` and obs unchanged) with ``obsm["spatial"]`` = the spot centres in level-0 pixels
    and ``uns["spatial"][library_id]`` holding ``images`` (``hires``, ``lowres``: uint8 (h, w, 3), the pyramid
    levels of longest side at most 2000 and 600 px, resized only when even the coarsest level is larger) and
    ``scalefactors`` (``tissue_hires_scalef``, ``tissue_lowres_scalef``: image px per level-0 px;
    ``spot_diameter_fullres``: the spot diameter, or square side, in level-0 px).
    """
    import spatialdata as sd
    from spatialdata.models import get_table_keys
    from spatialdata_io.experimental import to_legacy_anndata as sdio_to_legacy_anndata

    sdata = (
        store if isinstance(store, sd.SpatialData) else sd.read_zarr(store, selection=("images", "shapes", "tables"))
    )
    region, _, _ = get_table_keys(sdata.tables[table])
    if not isinstance(region, str):
        raise ValueError(f"table {table!r} annotates several elements ({region}); expected one")
    subset = sdata.subset([table, region])
    adata = sdio_to_legacy_anndata(
        subset, coordinate_system=CoordinateSystems.GLOBAL.value, table_name=table, include_images=False
    )
    library_id = library_id or str(sdata.attrs.get(ATTRS_KEY, {}).get("sample_id", image))
    hires, hires_scalef = _pyramid_image(sdata[image], HIRES_MAX_PX)
    lowres, lowres_scalef = _pyramid_image(sdata[image], LOWRES_MAX_PX)
    adata.uns["spatial"] = {
        library_id: {
            "images": {"hires": hires, "lowres": lowres},
            "scalefactors": {
                "tissue_hires_scalef": hires_scalef,
                "tissue_lowres_scalef": lowres_scalef,
                "spot_diameter_fullres": _spot_diameter_px(sdata.shapes[region]),
            },
            "metadata": {"source": "hest-spatialdata", "sample_id": library_id},
        }
    }
    return adata


def _pyramid_image(tree: Any, max_px: int) -> tuple[np.ndarray, float]:
    """The finest pyramid level of longest side at most ``max_px``, and its scale factor (px per level-0 px).

    The image is (h, w, 3) uint8; when even the coarsest level is larger, it is resized to ``max_px``.
    """
    from PIL import Image
    from spatialdata.transformations import get_transformation
    from xarray import DataArray

    levels = [tree] if isinstance(tree, DataArray) else [tree[name]["image"] for name in sorted(tree.children)]
    levels.sort(key=lambda level: -level.shape[-1])
    chosen = next((level for level in levels if max(level.shape[1:]) <= max_px), levels[-1])
    matrix = get_transformation(chosen, to_coordinate_system=CoordinateSystems.GLOBAL.value).to_affine_matrix(
        input_axes=("x", "y"), output_axes=("x", "y")
    )
    scalef = 1.0 / float(matrix[0, 0])
    pixels = np.moveaxis(np.asarray(chosen.data), 0, -1).astype(np.uint8, copy=False)
    longest = max(pixels.shape[:2])
    if longest > max_px:
        factor = max_px / longest
        size = (max(1, round(pixels.shape[1] * factor)), max(1, round(pixels.shape[0] * factor)))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.BILINEAR))
        scalef *= size[0] / chosen.shape[-1]
    return np.ascontiguousarray(pixels), scalef


def _spot_diameter_px(shapes: Any) -> float:
    """Spot diameter (circles) or side (squares) in the shapes' own pixels, the median over spots."""
    if "radius" in shapes.columns:
        return float(2 * np.median(shapes["radius"].to_numpy()))
    bounds = shapes.geometry.bounds
    return float(np.median((bounds["maxx"] - bounds["minx"]).to_numpy()))
