"""Geometry checks shared by the shapes readers (nuclei, tissue, patches)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely

from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.readers.spots import check_on_slide


def check_geometries_on_slide(
    geometries: np.ndarray, ctx: SampleContext, path: str | Path, *, what: str, tolerance_px: float = 0.0
) -> None:
    """Raise if any geometry reaches beyond the slide's level 0 by more than ``tolerance_px``.

    Only the bounds are checked: one vectorised pass, and a second one only to name the offenders.

    Parameters
    ----------
    geometries
        Shapely geometries in level-0 pixels.
    ctx
        The sample's context (slide size).
    path
        The source file, for the message.
    what
        What the geometries are, for the message (e.g. ``"nuclei"``).
    tolerance_px
        How far outside the slide a geometry may reach (segmentations traced on the slide border).

    Raises
    ------
    HestInputError
        Naming the sample, the file, how many geometries are off the slide and one example.
    """
    geometries = geometries[~shapely.is_empty(geometries)]  # no coordinates, nothing off the slide
    if len(geometries) == 0:
        return
    bounds = shapely.bounds(geometries)
    height, width = ctx.slide_shape
    lo, hi = bounds[:, :2], bounds[:, 2:]
    limit = np.array([width, height], dtype=np.float64)
    if np.isfinite(bounds).all() and (lo >= -tolerance_px).all() and (hi <= limit + tolerance_px).all():
        return
    # one corner per geometry: the one off the slide, pulled onto it when within the tolerance
    low_out = ~((lo >= -tolerance_px).all(axis=1))
    corner = np.where(low_out[:, None], lo, hi)
    corner = np.where((corner < 0) & (corner >= -tolerance_px), 0.0, corner)
    corner = np.where((corner > limit) & (corner <= limit + tolerance_px), limit, corner)
    check_on_slide(corner, ctx, path, what=what)
