"""The user's full-resolution H&E (``--image``) as the ``he`` pyramid's levels, streamed.

Any TIFF tifffile reads (plain, OME-TIFF, SVS; BigTIFF) that holds RGB uint8 pixels. A pyramidal file's own levels
are reused, pixel for pixel, as for a HEST slide (:func:`hest_spatialdata.readers.wsi.open_levels`). A flat file
gets lower levels built lazily: each is the 2x2 mean of the one above (sizes rounded down, as libvips 8.18 and
HEST's slides), down to about 1024 px (:func:`hest_spatialdata.readers.nuclei_labels.level_shapes`); a block of a
level reads its parent in pieces of at most :data:`PIECE_PX`, so memory stays a few blocks whatever the slide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hest_spatialdata.readers.nuclei_labels import level_shapes
from hest_spatialdata.readers.wsi import TiffLevel, open_levels
from hest_spatialdata.writer.image import Level

#: Side of the pieces a built level reads its parent in (px of the parent).
PIECE_PX = 2048


def image_levels(path: str | Path, sample_id: str) -> list[Level]:
    """The pyramid levels of the H&E at ``path``, level 0 first: the file's own, or built lazily from a flat one.

    Raises
    ------
    HestInputError
        If the file is missing, not a readable TIFF, not RGB uint8 or truncated (the message names it).
    """
    levels: list[Any] = list(open_levels(path, sample_id))
    if len(levels) > 1:
        return levels
    for shape in level_shapes(levels[0].shape[:2])[1:]:
        levels.append(HalvedLevel(levels[-1], shape))
    return levels


class HalvedLevel:
    """The 2x2 mean of ``parent`` (rounded half up, as the example slides), ``(y, x, c)``, read by slices."""

    ndim = 3

    def __init__(self, parent: TiffLevel | HalvedLevel, shape: tuple[int, int]) -> None:
        self.parent = parent
        self.shape: tuple[int, int, int] = (int(shape[0]), int(shape[1]), int(parent.shape[2]))
        self.dtype = parent.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        (y0, y1, _), (x0, x1, _) = key[0].indices(self.shape[0]), key[1].indices(self.shape[1])
        out = np.empty((max(y1 - y0, 0), max(x1 - x0, 0), self.shape[2]), self.dtype)
        step = PIECE_PX // 2
        for ya in range(y0, y1, step):
            for xa in range(x0, x1, step):
                yb, xb = min(ya + step, y1), min(xa + step, x1)
                piece = self.parent[2 * ya : 2 * yb, 2 * xa : 2 * xb]
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = halve(piece)
        return out[(slice(None), slice(None), *key[2:])]


def halve(block: np.ndarray) -> np.ndarray:
    """The 2x2 mean of an ``(2h, 2w, c)`` uint8 block, rounded half up."""
    h, w, c = block.shape[0] // 2, block.shape[1] // 2, block.shape[2]
    sums = block[: 2 * h, : 2 * w].reshape(h, 2, w, 2, c).sum(axis=(1, 3), dtype=np.uint16)
    return ((sums + 2) // 4).astype(block.dtype)
