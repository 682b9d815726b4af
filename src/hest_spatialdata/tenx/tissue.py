"""Tissue detection on a coarse level of the H&E, and HEST's patch rule on it (docs/import.md).

HEST-1k's contours come from a deep-learning segmenter whose weights this package does not ship; its alternative
(``HESTData.segment_tissue(method="otsu")``) thresholds a 2000-px-wide thumbnail with Otsu. This detection does the
same with OpenCV and scikit-image, on a pyramid level (no slide in memory):

1. the smallest level at least :data:`THUMBNAIL_PX` px wide (HEST's ``thumbnail_width``), or level 0;
2. its HSV saturation, median-blurred (glass is grey: low saturation; stained tissue is not);
3. Otsu's threshold of the saturation, clipped to :data:`SATURATION_RANGE` (a slide that is all tissue or all
   glass has no two classes for Otsu to split);
4. a morphological closing then opening (a disc of :data:`MORPHOLOGY_UM` µm), objects smaller than
   :data:`MIN_TISSUE_UM2` dropped, holes smaller than :data:`MIN_HOLE_UM2` filled; larger holes are kept;
5. the contours traced with their holes (OpenCV's two-level hierarchy) and scaled to level-0 px.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import shapely

from hest_spatialdata.readers._context import SampleContext

if TYPE_CHECKING:
    import geopandas as gpd

    from hest_spatialdata.writer.image import Level

#: Width of the level the tissue is detected on (HEST's ``thumbnail_width`` for its Otsu segmentation).
THUMBNAIL_PX = 2000
#: Bounds of the saturation threshold (0-255): Otsu's value is clipped into them.
SATURATION_RANGE = (15, 50)
MEDIAN_BLUR_PX = 5
MORPHOLOGY_UM = 20.0
MIN_TISSUE_UM2 = 50_000.0  # a 225 µm square: smaller specks are dust or debris
MIN_HOLE_UM2 = 20_000.0
#: HEST's patch rule (``HESTData.dump_patches``): 224 px at 0.5 µm/px around each spot, kept when at least 15 % of
#: the patch is tissue and the patch touches the slide.
PATCH_SIZE_PX = 224
PATCH_PIXEL_SIZE_UM = 0.5
PATCH_TISSUE_FRACTION = 0.15
TISSUE_ID = "tissue_id"


def detection_level(levels: Sequence[Level]) -> int:
    """Index of the level the tissue is detected on: the smallest at least :data:`THUMBNAIL_PX` wide, else 0."""
    wide = [k for k, level in enumerate(levels) if level.shape[1] >= THUMBNAIL_PX]
    return wide[-1] if wide else 0


def tissue_mask(rgb: np.ndarray, um_per_px: float) -> np.ndarray:
    """The boolean tissue mask of an RGB uint8 image with ``um_per_px`` µm per pixel (steps 2-4 above)."""
    import cv2
    from skimage import morphology

    saturation = cv2.medianBlur(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[..., 1], MEDIAN_BLUR_PX)
    otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = saturation > np.clip(otsu, *SATURATION_RANGE)
    disc = morphology.disk(max(1, round(MORPHOLOGY_UM / um_per_px / 2)))
    mask = close_then_open(mask, disc)
    area_px = um_per_px**2
    mask = morphology.remove_small_objects(mask, max_size=max(1, int(MIN_TISSUE_UM2 / area_px)))
    return morphology.remove_small_holes(mask, max_size=max(1, int(MIN_HOLE_UM2 / area_px)))


def close_then_open(mask: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """The closing, then the opening, of a boolean ``mask`` by the structuring element ``disc``.

    The masks of scipy's ``binary_closing`` and ``binary_opening`` (outside the image is background), made with
    OpenCV's filters: tens of times faster where the disc is 20 px and more (a small H&E detected at level 0).
    """
    import cv2

    kernel, border = disc.astype(np.uint8), {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0}
    closed = cv2.erode(cv2.dilate(mask.astype(np.uint8), kernel, **border), kernel, **border)
    return cv2.dilate(cv2.erode(closed, kernel, **border), kernel, **border).astype(bool)


def mask_polygons(mask: np.ndarray, scale: tuple[float, float]) -> list[shapely.Polygon]:
    """The pieces of a mask as polygons with their holes, scaled by ``(sx, sy)`` (pixel edges, not centres)."""
    import cv2

    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    sx, sy = scale

    def ring(contour: np.ndarray) -> np.ndarray:
        return (contour.reshape(-1, 2) + 0.5) * (sx, sy)

    polygons = []
    for i, (_, _, first_hole, parent) in enumerate(hierarchy[0]):
        if parent != -1 or len(contours[i]) < 3:
            continue
        holes, child = [], first_hole
        while child != -1:
            if len(contours[child]) >= 3:
                holes.append(ring(contours[child]))
            child = hierarchy[0][child][0]
        # a contour touching itself is an invalid ring: made valid, it may become several polygons (and lines)
        for part in shapely.get_parts(shapely.make_valid(shapely.Polygon(ring(contours[i]), holes))):
            polygons += [p for p in shapely.get_parts(part) if isinstance(p, shapely.Polygon) and p.area > 0]
    return polygons


def detect_tissue(levels: Sequence[Level], ctx: SampleContext) -> gpd.GeoDataFrame | None:
    """The ``tissue`` shapes element detected on the H&E, or ``None`` where no tissue is found.

    Parameters
    ----------
    levels
        The H&E's pyramid levels (level 0 first).
    ctx
        The sample's context (pixel size, transformations).
    """
    import geopandas as gpd
    from spatialdata.models import ShapesModel

    k = detection_level(levels)
    level = levels[k]
    height, width = level.shape[:2]
    scale = (ctx.slide_shape[1] / width, ctx.slide_shape[0] / height)
    mask = tissue_mask(level[0:height, 0:width], ctx.pixel_size_um * scale[0])
    polygons = mask_polygons(mask, scale)
    if not polygons:
        return None
    frame = gpd.GeoDataFrame({TISSUE_ID: np.arange(len(polygons))}, geometry=polygons)
    return ShapesModel.parse(frame, transformations=ctx.transformations())


def patch_squares(centres: np.ndarray, ctx: SampleContext) -> tuple[np.ndarray, np.ndarray]:
    """HEST's patch squares around spot centres: ``(top-left (n, 2) int, side)`` in level-0 px.

    As ``HESTData.dump_patches``: the crop's side is ``224 * 0.5 / pixel size``, its top-left corner
    ``centre - side // 2`` cast to int; the footprint's side is that side rounded (as
    :func:`hest_spatialdata.readers.patches.patch_side_px` draws HEST's own patches).
    """
    side = PATCH_SIZE_PX * (PATCH_PIXEL_SIZE_UM / ctx.pixel_size_um)
    return (centres - side // 2).astype(int), np.asarray(round(side))


def patch_footprints(
    centres: np.ndarray, barcodes: Sequence[str], tissue: gpd.GeoDataFrame | None, ctx: SampleContext
) -> gpd.GeoDataFrame | None:
    """The ``patches`` element: HEST's patch of every spot on the slide with at least 15 % tissue.

    ``None`` when no patch is kept (no tissue detected, or no spot on it).
    """
    import geopandas as gpd
    import pandas as pd
    from spatialdata.models import ShapesModel

    if tissue is None or not len(centres):
        return None
    corners, side = patch_squares(centres, ctx)
    height, width = ctx.slide_shape
    x, y = corners[:, 0], corners[:, 1]
    on_slide = (x + side >= 0) & (x < width) & (y + side >= 0) & (y < height)
    squares = shapely.box(x, y, x + side, y + side)
    covered = shapely.area(shapely.intersection(squares, shapely.union_all(tissue.geometry.to_numpy())))
    keep = on_slide & (covered >= PATCH_TISSUE_FRACTION * float(side) ** 2)
    if not keep.any():
        return None
    index = pd.Index(np.asarray(barcodes, dtype=object)[keep], dtype=str)
    frame = gpd.GeoDataFrame(geometry=squares[keep], index=index)
    return ShapesModel.parse(frame, transformations=ctx.transformations())
