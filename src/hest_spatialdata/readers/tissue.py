"""``tissue_seg/{id}_contours.geojson``: the tissue contours of a sample as the ``tissue`` shapes element.

Two layouts exist (``docs/hest_format.md`` section 5.3):

- current: a GeoJSON FeatureCollection written by ``GeoDataFrame.to_file(driver="GeoJSON")``, one Polygon per
  piece of tissue in level-0 px, holes as interior rings, property ``tissue_id`` (a string in the released files);
- deprecated: a QuPath-style top-level list with one Feature per tissue id (``classification.name``), whose
  MultiPolygon holds single rings and whose ``properties.hole`` lists the indices of the rings that are holes.

Both give polygons with their holes and a ``tissue_id`` column, in file order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from spatialdata.models import ShapesModel

from hest_spatialdata._constants import Elements
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import check_geometries_on_slide, check_polygons
from hest_spatialdata.readers._context import SampleContext

TISSUE_ID = "tissue_id"
#: Contours are traced on a downscaled mask and scaled back to level 0, so on the slide border they may overshoot
#: it by about one mask pixel.
EDGE_TOLERANCE_PX = 64.0


def read(path: Path, ctx: SampleContext, elements: frozenset[Elements]) -> dict[str, gpd.GeoDataFrame]:
    """Reader contract (see :mod:`hest_spatialdata.readers`): ``tissue`` from ``tissue_seg/{id}_contours.geojson``."""
    return {Elements.TISSUE.value: read_tissue(path, ctx)}


def read_tissue(path: str | Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    """Read a sample's tissue contours as a ``tissue`` shapes element.

    Parameters
    ----------
    path
        ``tissue_seg/{id}_contours.geojson`` (FeatureCollection, or the deprecated QuPath list with ``hole``).
    ctx
        The sample's context (slide size for the bounds check, pixel size for ``microns``).

    Returns
    -------
    One (Multi)Polygon per piece of tissue in level-0 px, holes kept as interior rings, with the ``tissue_id``
    of the file (its type unchanged), in the ``global`` and ``microns`` coordinate systems.

    Raises
    ------
    HestInputError
        If the file is missing, not GeoJSON, lacks ``tissue_id``, holds non-polygons, or lies off the slide.
    """
    path = Path(path)
    try:
        with path.open("rb") as file:
            head = file.read(4096).lstrip()
    except OSError as e:
        raise HestInputError(ctx.sample_id, path, f"tissue contours not found or unreadable ({e})") from e
    contours = _read_qupath_list(path, ctx) if head.startswith(b"[") else _read_feature_collection(path, ctx)
    check_polygons(contours.geometry.to_numpy(), ctx, path, what="tissue contours")
    check_geometries_on_slide(
        contours.geometry.to_numpy(), ctx, path, what="tissue contours (polygon bounds)", tolerance_px=EDGE_TOLERANCE_PX
    )
    return ShapesModel.parse(contours, transformations=ctx.transformations())


def _read_feature_collection(path: Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    try:
        frame = gpd.read_file(path)
    except Exception as e:  # pyogrio/GDAL raise DataSourceError, ValueError ... on bad files
        raise HestInputError(ctx.sample_id, path, f"tissue contours are not readable GeoJSON ({e})") from e
    if TISSUE_ID not in frame.columns:
        raise HestInputError(ctx.sample_id, path, f"tissue contours have no {TISSUE_ID!r} property")
    if frame.geometry.isna().any():
        raise HestInputError(ctx.sample_id, path, "a tissue contour has no geometry")
    frame = frame[[TISSUE_ID, frame.geometry.name]].reset_index(drop=True)
    return frame.set_crs(None, allow_override=True)


def _read_qupath_list(path: Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    try:
        features = json.loads(path.read_text(encoding="utf-8-sig"))
        pieces = [piece for feature in features for piece in _qupath_tissue(feature)]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise HestInputError(
            ctx.sample_id, path, f"tissue contours (QuPath list) invalid ({type(e).__name__}: {e})"
        ) from e
    ids = pd.Series([tissue_id for tissue_id, _ in pieces])  # type inferred, as GDAL does for the current layout
    return gpd.GeoDataFrame({TISSUE_ID: ids}, geometry=[polygon for _, polygon in pieces])


def _qupath_tissue(feature: dict[str, Any]) -> list[tuple[Any, shapely.Polygon]]:
    """The polygons of one deprecated-layout Feature: its non-hole rings, each with the holes inside it."""
    tissue_id = feature["properties"]["classification"]["name"]
    rings = [polygon[0] for polygon in feature["geometry"]["coordinates"]]
    hole_indices = set(feature["properties"].get("hole", []))
    exteriors = [shapely.Polygon(ring) for i, ring in enumerate(rings) if i not in hole_indices]
    holes = [shapely.LinearRing(rings[i]) for i in sorted(hole_indices)]
    if not exteriors:
        raise ValueError(f"tissue {tissue_id!r} has holes but no outline")
    inside: list[list[shapely.LinearRing]] = [[] for _ in exteriors]
    for hole in holes:
        point = shapely.Polygon(hole).representative_point()
        owner = next((k for k, outline in enumerate(exteriors) if outline.contains(point)), 0)
        inside[owner].append(hole)
    return [(tissue_id, shapely.Polygon(outline.exterior, inside[k])) for k, outline in enumerate(exteriors)]
