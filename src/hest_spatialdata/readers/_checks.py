"""Checks shared by the readers, with one wording: coordinates on the slide, polygons, unique ids.

Every failure is a :class:`~hest_spatialdata.errors.HestInputError` naming the sample and the file. Every check
takes ``ctx`` (the sample's context: its id and slide size), ``path`` (the source file) and ``what`` (what is
checked, e.g. ``"nuclei"`` or ``"spot centres (obsm['spatial'])"``), for the message.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._context import SampleContext

_POLYGONAL = (shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON)


def reason(error: BaseException) -> str:
    """An exception as ``"Type: message"``, for the "unreadable (...)" part of a message."""
    return f"{type(error).__name__}: {error}"


def check_on_slide(xy: np.ndarray, ctx: SampleContext, path: str | Path, *, what: str) -> None:
    """Raise if any ``(n, 2)`` (x, y) coordinate in level-0 px is not finite or lies outside the slide's level 0.

    The message says how many coordinates are off the slide and gives one.
    """
    if len(xy) == 0:
        return
    if not np.isfinite(xy).all():
        raise HestInputError(ctx.sample_id, path, f"{what} contain NaN or infinite values")
    height, width = ctx.slide_shape
    outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
    if outside.any():
        first = xy[np.argmax(outside)]
        raise HestInputError(
            ctx.sample_id,
            path,
            f"{outside.sum()} {what} lie outside the {width} x {height} px slide, "
            f"e.g. (x={first[0]:g}, y={first[1]:g}); are the coordinates in level-0 pixels of this slide?",
        )


def check_geometries_on_slide(
    geometries: np.ndarray, ctx: SampleContext, path: str | Path, *, what: str, tolerance_px: float = 0.0
) -> None:
    """Raise if any geometry reaches beyond the slide's level 0 by more than ``tolerance_px``.

    Only the bounds of the ``geometries`` (shapely, level-0 px) are checked: one vectorised pass, and a second one
    only to name the offenders (how many, and one). ``tolerance_px`` is how far outside the slide a geometry may
    reach (segmentations traced on the slide border).
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


def check_polygons(geometries: np.ndarray, ctx: SampleContext, path: str | Path, *, what: str) -> None:
    """Raise unless every geometry is present and a Polygon or MultiPolygon.

    The message is ``"{n} {what} have no geometry"`` or ``"{what} must be polygons, found a POINT"``.
    """
    missing = shapely.is_missing(geometries)
    if missing.any():
        raise HestInputError(ctx.sample_id, path, f"{missing.sum()} {what} have no geometry")
    kinds = shapely.get_type_id(geometries)
    polygonal = np.isin(kinds, _POLYGONAL)
    if not polygonal.all():
        bad = shapely.GeometryType(kinds[~polygonal][0]).name
        raise HestInputError(ctx.sample_id, path, f"{what} must be polygons, found a {bad}")


def check_unique(index: pd.Index | Any, ctx: SampleContext, path: str | Path, *, what: str) -> None:
    """Raise if ``index`` holds a duplicate, naming one (``"{what} are not unique, e.g. 'x'"``)."""
    index = pd.Index(index)
    if not index.is_unique:
        raise HestInputError(ctx.sample_id, path, f"{what} are not unique, e.g. {index[index.duplicated()][0]!r}")


def check_extent_on_slide(lo: Any, hi: Any, ctx: SampleContext, path: str | Path, *, what: str) -> None:
    """Raise if the extent ``lo`` = (x0, y0) .. ``hi`` = (x1, y1) of a large set is not finite or leaves the slide.

    For sets summarised by their extent while streaming (transcripts, boundaries); the message gives the extent.
    """
    (x0, y0), (x1, y1) = lo, hi
    height, width = ctx.slide_shape
    if not np.isfinite([x0, y0, x1, y1]).all():
        raise HestInputError(ctx.sample_id, path, f"{what} contain NaN or infinite coordinates")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise HestInputError(
            ctx.sample_id,
            path,
            f"{what} span x {x0:g}..{x1:g}, y {y0:g}..{y1:g} px, outside the {width} x {height} px slide;"
            " are the coordinates in level-0 pixels of this slide?",
        )


def warn(ctx: SampleContext, path: str | Path | None, message: str) -> None:
    """Warn about something a sample lacks or that was left out, naming the sample and the file."""
    where = f" ({path})" if path is not None else ""
    warnings.warn(f"sample {ctx.sample_id}{where}: {message}", UserWarning, stacklevel=3)
