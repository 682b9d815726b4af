"""``wsis/{id}.tif``: the H&E whole-slide image as a multiscale image element (``he``).

The HEST slide is a pyramidal tiled (Big)TIFF written by libvips (256-px tiles, LZW or deflate, RGB uint8, one
page per level). Its levels are reused as they are (level k of the store is level k of the TIFF, pixel for
pixel) and read lazily, tile by tile, through tifffile's zarr interface: nothing is decoded until a chunk is
computed, so memory does not grow with the slide.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import dask.array as da
import numpy as np
import tifffile
import zarr
from spatialdata.models import Image2DModel
from spatialdata.models.pyramids_utils import dask_arrays_to_datatree
from spatialdata.transformations import set_transformation
from xarray import DataTree

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._context import SampleContext

#: Chunk side of the store's image arrays, a multiple of the TIFF's 256-px tiles (measured in benchmarks/).
DEFAULT_CHUNK_SIZE = 2048
CHANNELS = ["r", "g", "b"]


def slide_levels(path: str | Path, sample_id: str | None = None) -> list[tuple[int, int]]:
    """``(height, width)`` of every pyramid level of a HEST slide, reading only the TIFF header.

    Raises
    ------
    HestInputError
        If the file is missing, not a TIFF, or not an RGB uint8 image.
    """
    with _open_tiff(path, sample_id) as tif:
        return [shape[:2] for shape in _checked_level_shapes(tif, path, sample_id)]


def read_wsi(path: str | Path, ctx: SampleContext, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> DataTree:
    """Read a HEST slide as a lazy multiscale ``he`` image.

    Parameters
    ----------
    path
        ``wsis/{id}.tif``.
    ctx
        The sample's context (pixel size for the ``microns`` coordinate system).
    chunk_size
        Chunk side in pixels of the dask arrays, hence of the store; a multiple of 256 keeps chunks tile-aligned.

    Returns
    -------
    A DataTree with ``scale0..scaleN`` = the TIFF's levels, dims ``(c, y, x)``, ``c = r, g, b``, uint8.
    """
    tif = _open_tiff(path, ctx.sample_id)
    try:
        _checked_level_shapes(tif, path, ctx.sample_id)
        store = tif.series[0].aszarr(multiscales=True)
        # The TiffFile stays open while the lazy arrays (which hold the store) live, and no longer.
        weakref.finalize(store, tif.close)
        group = zarr.open_group(store, mode="r")
        levels = [_level_array(group[str(k)], chunk_size) for k in range(len(tif.series[0].levels))]
    except HestInputError:
        tif.close()
        raise
    except Exception as e:  # tifffile raises many types for corrupt files
        tif.close()
        raise HestInputError(ctx.sample_id, path, f"slide unreadable: {e}") from e
    tree = dask_arrays_to_datatree(levels, dims=("c", "y", "x"), channels=CHANNELS)
    set_transformation(tree, ctx.transformations(), set_all=True)
    Image2DModel().validate(tree)
    return tree


def _level_array(level: zarr.Array, chunk_size: int) -> da.Array:
    # from_array reads each chunk as one slice of the TIFF level: tifffile decodes exactly the tiles it covers.
    array = da.from_array(level, chunks=(chunk_size, chunk_size, level.shape[2]), lock=False, asarray=True)
    return array.transpose(2, 0, 1)


def _open_tiff(path: str | Path, sample_id: str | None) -> tifffile.TiffFile:
    path = Path(path)
    if not path.is_file():
        raise HestInputError(sample_id, path, "slide not found")
    try:
        return tifffile.TiffFile(path)
    except Exception as e:  # tifffile raises TiffFileError, ValueError, struct.error ... on bad files
        raise HestInputError(sample_id, path, f"slide is not a readable TIFF ({e})") from e


def _checked_level_shapes(tif: tifffile.TiffFile, path: str | Path, sample_id: str | None) -> list[tuple[int, ...]]:
    if not tif.series or not len(tif.pages):
        raise HestInputError(sample_id, path, "slide holds no readable image page: the file is truncated or damaged")
    series = tif.series[0]
    shapes = [tuple(level.shape) for level in series.levels]
    if len(shapes[0]) != 3 or shapes[0][2] != 3 or series.dtype != np.uint8:
        raise HestInputError(
            sample_id, path, f"slide must be RGB uint8 (y, x, 3), got shape {shapes[0]} and dtype {series.dtype}"
        )
    for page in (level.keyframe for level in series.levels):
        if page.dataoffsets and _truncated(tif, page):
            raise HestInputError(sample_id, path, "slide is truncated: tile data lie beyond the end of the file")
    return shapes


def _truncated(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> bool:
    size = tif.filehandle.size
    return any(o + n > size for o, n in zip(page.dataoffsets, page.databytecounts, strict=True) if n)
