"""``slide_thumbnail()``: a coarse level of a sample's slide with its spots drawn, reading nothing else of it.

From a remote root (``hf://datasets/MahmoodLab/hest``) this fetches the TIFF header, that level's tiles,
the metadata JSON and the st h5ad: a look at a sample before downloading it. Given a converted store (or its
folder), local or in object storage, it reads that level's chunks of the store instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw

from hest_spatialdata._constants import Elements
from hest_spatialdata.source.layout import Part

if TYPE_CHECKING:
    from collections.abc import Mapping

    import geopandas as gpd
    from spatialdata import SpatialData

#: Outline of the drawn spots (RGB) and its width in pixels.
SPOT_COLOUR = (20, 220, 60)
SPOT_LINE_PX = 1


#: Default smallest longer side of the level drawn: HEST pyramids go down to one tile (~200 px), too small to see.
MIN_SIDE_PX = 1000


def slide_thumbnail(
    hest_dir: str | Path,
    sample_id: str,
    out: str | Path,
    *,
    spots: bool = True,
    min_side: int = MIN_SIDE_PX,
    storage_options: Mapping[str, Any] | None = None,
) -> Path:
    """Write a coarse level of a sample's slide as a PNG, with its spots (or pseudo-spots) outlined.

    The level drawn is the coarsest whose longer side has at least ``min_side`` px (level 0 if none has); only its
    tiles are read.

    Parameters
    ----------
    hest_dir
        A HEST root, local or remote (``hf://datasets/MahmoodLab/hest[@revision]``), or a converted store / folder
        of stores, local or in object storage (``s3://bucket/prefix``).
    sample_id
        The sample id.
    out
        The PNG to write.
    spots
        Draw the spots of the st h5ad (when the sample has one).
    min_side
        Smallest longer side of the level drawn, in px; ``0``: the coarsest level.
    storage_options
        fsspec options of a store URL.

    Returns
    -------
    The PNG's path.

    Raises
    ------
    HestInputError
        If the sample has no slide, or a file is bad.
    """
    wanted = [Elements.HE.value] + ([Elements.SPOTS.value] if spots else [])
    sdata = _read_sample(hest_dir, sample_id, wanted, storage_options)
    if Elements.HE.value not in sdata.images:
        from hest_spatialdata.errors import HestInputError
        from hest_spatialdata.source.layout import PARTS

        raise HestInputError(sample_id, PARTS[Part.WSI].relative_paths(sample_id)[0], "the sample has no slide")
    tree = sdata[Elements.HE.value]
    level0 = tree["scale0"]["image"].shape[1:]
    levels = [tree[f"scale{k}"]["image"] for k in range(len(tree))]
    big_enough = [level for level in levels if max(level.shape[1:]) >= min_side] or levels[:1]
    pixels = big_enough[-1].values  # only this level's tiles are read
    image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)))
    if spots and Elements.SPOTS.value in sdata.shapes:
        _draw_spots(image, sdata[Elements.SPOTS.value], image.height / level0[0], image.width / level0[1])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def _read_sample(
    root: str | Path, sample_id: str, wanted: list[str], storage_options: Mapping[str, Any] | None
) -> SpatialData:
    """The sample from a converted store (``root`` is the store or its folder), else from the HEST root."""
    from hest_spatialdata.storage.locations import locate
    from hest_spatialdata.storage.store import store_attrs

    if not str(root).startswith("hf://"):
        location = locate(root, storage_options)
        for store in (location, location / f"{sample_id}.zarr"):
            if store_attrs(store) is not None:
                from hest_spatialdata.storage.reader import read_store

                return read_store(store, selection=("images", "shapes"))
    from hest_spatialdata.readers.sample import read_hest

    return read_hest(root, sample_id, elements=wanted)


def _draw_spots(image: Image.Image, shapes: gpd.GeoDataFrame, sy: float, sx: float) -> None:
    draw = ImageDraw.Draw(image)
    if "radius" in shapes.columns:
        for point, radius in zip(shapes.geometry, shapes["radius"], strict=True):
            x, y, rx, ry = point.x * sx, point.y * sy, max(radius * sx, 1.0), max(radius * sy, 1.0)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), outline=SPOT_COLOUR, width=SPOT_LINE_PX)
        return
    for x0, y0, x1, y1 in shapes.geometry.bounds.to_numpy():
        draw.rectangle((x0 * sx, y0 * sy, max(x1 * sx, x0 * sx + 1), max(y1 * sy, y0 * sy + 1)), outline=SPOT_COLOUR)
