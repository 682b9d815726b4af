"""``wsis/{id}.tif``: the H&E whole-slide image as a multiscale image element (``he``).

The HEST slide is a pyramidal tiled (Big)TIFF written by libvips (256-px tiles, LZW or deflate, RGB uint8, one
page per level). Its levels are reused as they are (level k of the store is level k of the TIFF, pixel for
pixel) and read lazily, tile by tile: nothing is decoded until a chunk is computed, so memory does not grow with
the slide. Each dask chunk reads and decodes its own tiles (tifffile's decoder) in the dask worker thread.

The converter does not write this lazy image through spatialdata: it hands the same :class:`TiffLevel` readers
(:func:`open_levels`) to :mod:`hest_spatialdata.writer.image`, which writes every level with a thread pool.
"""

from __future__ import annotations

import struct
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tifffile

from hest_spatialdata._constants import Elements
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._context import DEFAULT_CHUNK_SIZE, SampleContext
from hest_spatialdata.roots.remote import RemoteFile, RemoteReadError, SharedRanges

if TYPE_CHECKING:
    import dask.array as da
    from xarray import DataTree

__all__ = ["DEFAULT_CHUNK_SIZE", "TiffLevel", "open_levels", "read", "read_wsi", "slide_levels"]

#: Width of the blocks a remote slide is read in by a conversion (px): the chunks side by side in 2048 px share one
#: request per row of tiles (8 requests for a 2048-px square). A window reads only its own tiles.
REMOTE_BLOCK = 2048
CHANNELS = ["r", "g", "b"]


def slide_levels(path: str | Path | RemoteFile, sample_id: str | None = None) -> list[tuple[int, int]]:
    """``(height, width)`` of every pyramid level of a HEST slide, reading only the TIFF header.

    Raises
    ------
    HestInputError
        If the file is missing, not a TIFF, or not an RGB uint8 image.
    """
    with _open_tiff(path, sample_id) as tif:
        return [shape[:2] for shape in _checked_level_shapes(tif, path, sample_id)]


def read(path: Path, ctx: SampleContext, elements: frozenset[Elements]) -> dict[str, DataTree]:
    """Reader contract (see :mod:`hest_spatialdata.readers`): ``he`` from ``wsis/{id}.tif``."""
    return {Elements.HE.value: read_wsi(path, ctx, chunk_size=ctx.chunk_size)}


def read_wsi(path: str | Path | RemoteFile, ctx: SampleContext, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> DataTree:
    """Read a HEST slide as a lazy multiscale ``he`` image.

    Parameters
    ----------
    path
        ``wsis/{id}.tif``, local or remote (:class:`hest_spatialdata.roots.remote.RemoteFile`: only the header is read
        now, each chunk's tiles when it is computed).
    ctx
        The sample's context (pixel size for the ``microns`` coordinate system).
    chunk_size
        Chunk side in pixels of the dask arrays, hence of the store; a multiple of 256 keeps chunks tile-aligned.

    Returns
    -------
    A DataTree with ``scale0..scaleN`` = the TIFF's levels, dims ``(c, y, x)``, ``c = r, g, b``, uint8.
    """
    from spatialdata.models import Image2DModel
    from spatialdata.models.pyramids_utils import dask_arrays_to_datatree
    from spatialdata.transformations import set_transformation

    tiff_levels = open_levels(path, ctx.sample_id)
    if isinstance(path, RemoteFile):
        levels = [_remote_level_array(_RemoteLevel(level, chunk_size)) for level in tiff_levels]
    else:
        levels = [_level_array(level, chunk_size) for level in tiff_levels]
    tree = dask_arrays_to_datatree(levels, dims=("c", "y", "x"), channels=CHANNELS)
    set_transformation(tree, ctx.transformations(), set_all=True)
    Image2DModel().validate(tree)
    return tree


def open_levels(path: str | Path | RemoteFile, sample_id: str | None = None) -> list[TiffLevel]:
    """The pyramid levels of a HEST slide as :class:`TiffLevel` readers (the file stays open while they live).

    Only the header is read (and checked: RGB uint8, no truncated tile or page), not the pixels.

    Parameters
    ----------
    path
        ``wsis/{id}.tif``, local or remote (:class:`hest_spatialdata.roots.remote.RemoteFile`).
    sample_id
        The sample, for error messages.

    Returns
    -------
    Level 0 (full resolution) first.

    Raises
    ------
    HestInputError
        If the file is missing, not a readable TIFF, not RGB uint8, or truncated.
    """
    tif = _open_tiff(path, sample_id)
    try:
        _checked_level_shapes(tif, path, sample_id)
        tif.filehandle.set_lock(True)  # reader threads seek + read the one file handle
        slide = _OpenSlide(tif, path if isinstance(path, RemoteFile) else None, sample_id)
        # The TiffFile stays open while the levels (which hold the slide) live, and no longer.
        weakref.finalize(slide, tif.close)
        return [TiffLevel(slide, k) for k in range(len(tif.series[0].levels))]
    except (HestInputError, RemoteReadError):
        tif.close()
        raise
    except Exception as e:  # tifffile raises many types for corrupt files
        tif.close()
        raise HestInputError(sample_id, path, f"slide unreadable: {e}") from e


class _OpenSlide:
    """The open TiffFile shared by the levels of one slide (closed when the last level is garbage collected).

    A local slide's tiles are read from the file handle; a remote one's (``remote``) by byte ranges, the tiles that
    neighbour each other in the file in one request, through :class:`~hest_spatialdata.roots.remote.SharedRanges` (so
    the tiles fetched for a block serve each chunk of it).
    """

    def __init__(self, tif: tifffile.TiffFile, remote: RemoteFile | None = None, sample_id: str | None = None) -> None:
        self.tif = tif
        self.remote = remote
        self.sample_id = sample_id
        self.shared = SharedRanges(remote) if remote is not None else None

    def segments(self, offsets: list[int], counts: list[int], indices: list[int]) -> Iterator[tuple[bytes, int]]:
        """``(compressed tile, tile index)`` for each tile."""
        if self.remote is None:
            fh = self.tif.filehandle
            yield from fh.read_segments(offsets, counts, indices, lock=fh.lock)
            return
        yield from zip(self.shared.take(_ranges(offsets, counts)), indices, strict=True)  # type: ignore[union-attr]


class TiffLevel:
    """One level of a tiled (or striped) TIFF as a lazy ``(y, x, c)`` array for :func:`dask.array.from_array`.

    A slice reads the tiles it covers (under the file's lock) and decodes them with tifffile's own decoder (LZW or
    deflate + predictor, JPEG ...; imagecodecs releases the GIL) in the calling thread, so dask's threads decode
    different chunks in parallel. tifffile's zarr store (``aszarr``) instead decodes every tile on zarr's single
    I/O event-loop thread whenever tifffile allots it fewer than 3 workers (half the cores, so on machines with up
    to 5 cores): on 2 cores that serialised the decode and made the conversion 1.5-1.6x slower than decoding and
    encoding the tiles by hand (``benchmarks/bench_wsi.py``); read this way it is on par.
    """

    ndim = 3

    def __init__(self, slide: _OpenSlide, level: int) -> None:
        self._slide = slide  # keeps the file open
        self._page = slide.tif.series[0].levels[level].pages[0]
        keyframe = self._page.keyframe
        self.shape: tuple[int, int, int] = tuple(keyframe.shape)
        self.dtype = keyframe.dtype
        self._tile: tuple[int, int] = keyframe.chunks[:2]  # tile (or strip) height and width
        self._across: int = keyframe.chunked[1]  # tiles per row, 1 for strips
        self._decode = keyframe.decode  # tifffile builds the decoder once per page
        self._decode_args = {"jpegtables": self._page.jpegtables, "jpegheader": keyframe.jpegheader}

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) < 2 or not isinstance(key[0], slice) or not isinstance(key[1], slice):
            raise IndexError(f"a TiffLevel takes (y slice, x slice[, c]), not {key!r}")
        (y0, y1, ystep), (x0, x1, xstep) = key[0].indices(self.shape[0]), key[1].indices(self.shape[1])
        if ystep != 1 or xstep != 1:
            raise IndexError("a TiffLevel takes unit-step slices")
        out = np.empty((max(y1 - y0, 0), max(x1 - x0, 0), self.shape[2]), self.dtype)
        if out.size:
            self._read_into(out, y0, x0)
        return out[(slice(None), slice(None), *key[2:])]

    def prefetch(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Fetch the tiles covering rows ``y0:y1`` and columns ``x0:x1`` of a remote slide for the reads to come."""
        if self._slide.shared is not None:
            _, offsets, counts = self._tiles(y0, y1, x0, x1)
            self._slide.shared.prefetch((self._page.index, y0, x0), _ranges(offsets, counts))

    def _tiles(self, y0: int, y1: int, x0: int, x1: int) -> tuple[list[int], list[int], list[int]]:
        """``(indices, offsets, byte counts)`` of the tiles covering rows ``y0:y1`` and columns ``x0:x1``."""
        (th, tw), across = self._tile, self._across
        indices = [ty * across + tx for ty in range(y0 // th, -(-y1 // th)) for tx in range(x0 // tw, -(-x1 // tw))]
        return indices, [self._page.dataoffsets[i] for i in indices], [self._page.databytecounts[i] for i in indices]

    def _read_into(self, out: np.ndarray, y0: int, x0: int) -> None:
        (th, tw), across = self._tile, self._across
        y1, x1 = y0 + out.shape[0], x0 + out.shape[1]
        indices, offsets, counts = self._tiles(y0, y1, x0, x1)
        for data, index in self._slide.segments(offsets, counts, indices):
            ty, tx = (index // across) * th, (index % across) * tw  # the tile's first pixel in the level
            ya, yb, xa, xb = max(y0, ty), min(y1, ty + th), max(x0, tx), min(x1, tx + tw)
            target = out[ya - y0 : yb - y0, xa - x0 : xb - x0]
            if not data:  # a tile the writer left out reads as 0, as tifffile does
                target[...] = 0
                continue
            tile = self._decode_tile(data, index)
            tile = tile.reshape(tile.shape[-3:])  # (1, h, w, c) -> (h, w, c); a last strip may be short
            target[...] = tile[ya - ty : yb - ty, xa - tx : xb - tx]

    def _decode_tile(self, data: bytes, index: int) -> np.ndarray:
        try:
            return self._decode(data, index, **self._decode_args)[0]
        except Exception as e:
            remote = self._slide.remote
            if remote is None:
                problem = f"slide damaged: tile {index} cannot be decoded ({e})"
                raise HestInputError(self._slide.sample_id, self._slide.tif.filehandle.path, problem) from e
            # The bytes came with the right length, so a failed decode is a damaged file, or (rarely) a bad body:
            # read the tile once more before saying so.
            offset, count = self._page.dataoffsets[index], self._page.databytecounts[index]
            try:
                return self._decode(remote.fetch(offset, offset + count), index, **self._decode_args)[0]
            except Exception:  # noqa: BLE001 - tifffile's decoders raise many types; the first error is reported
                raise RemoteReadError(f"{remote}: tile {index} (bytes {offset}+{count}) cannot be decoded: {e}") from e


def _level_array(level: TiffLevel, chunk_size: int) -> da.Array:
    import dask.array as da

    # from_array reads each chunk as one slice of the TIFF level: exactly the tiles it covers are decoded.
    chunks = (chunk_size, chunk_size, level.shape[2])
    array = da.from_array(level, chunks=chunks, lock=False, asarray=True, meta=np.empty((0, 0, 0), level.dtype))
    return array.transpose(2, 0, 1)


class _RemoteLevel:
    """A remote slide's level as a lazy ``(c, y, x)`` array of ``chunk_size`` chunks.

    Channels first, so that dask fuses a slice of the level into the one read of its chunk (a transposed array would
    read whole chunks): a window fetches only the tiles it covers. A whole chunk (what a conversion reads) first
    fetches the tiles of its :data:`REMOTE_BLOCK`-px block, one request per row of tiles (or one for the block when
    its rows follow each other in the file), and each chunk of the block takes its tiles from there: a conversion
    makes the requests of 2048-px blocks, as when it read them as dask blocks.
    """

    ndim = 3

    def __init__(self, level: TiffLevel, chunk_size: int) -> None:
        self.level, self.chunk_size = level, chunk_size
        height, width, channels = level.shape
        self.shape = (channels, height, width)
        self.dtype = level.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) != 3 or not all(isinstance(k, slice) for k in key):
            raise IndexError(f"a remote level takes (c slice, y slice, x slice), not {key!r}")
        (y0, y1, _), (x0, x1, _) = key[1].indices(self.shape[1]), key[2].indices(self.shape[2])
        if self._whole_chunk(y0, y1, x0, x1):
            block = max(self.chunk_size, REMOTE_BLOCK // self.chunk_size * self.chunk_size)
            by0, bx0 = y0 // block * block, x0 // block * block
            self.level.prefetch(by0, min(by0 + block, self.shape[1]), bx0, min(bx0 + block, self.shape[2]))
        return self.level[key[1], key[2]].transpose(2, 0, 1)[key[0]]

    def _whole_chunk(self, y0: int, y1: int, x0: int, x1: int) -> bool:
        size = self.chunk_size
        return (
            y0 % size == 0 and x0 % size == 0 and y1 == min(y0 + size, self.shape[1])
            and x1 == min(x0 + size, self.shape[2])
        )  # fmt: skip


def _remote_level_array(level: _RemoteLevel) -> da.Array:
    import dask.array as da

    chunks = (level.shape[0], level.chunk_size, level.chunk_size)
    return da.from_array(level, chunks=chunks, lock=False, asarray=True, meta=np.empty((0, 0, 0), level.dtype))


def _ranges(offsets: list[int], counts: list[int]) -> list[tuple[int, int]]:
    """The byte range of each tile (``(0, 0)`` for a tile the writer left out)."""
    return [(o, o + n) if n else (0, 0) for o, n in zip(offsets, counts, strict=True)]


def _open_tiff(path: str | Path | RemoteFile, sample_id: str | None) -> tifffile.TiffFile:
    if isinstance(path, RemoteFile):
        try:
            # Only the header is read (IFDs and tile offsets, a few blocks); tiles are fetched by the levels.
            return tifffile.TiffFile(path.open(), name=path.name)
        except RemoteReadError:
            raise
        except Exception as e:
            raise HestInputError(sample_id, path, f"slide is not a readable TIFF ({e})") from e
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
    next_page = next_ifd_offset(tif, tif.pages[len(tif.pages) - 1])
    if next_page:
        # tifffile stops quietly (it only logs) at a page offset past the end: the lower levels would be missing.
        raise HestInputError(
            sample_id,
            path,
            f"slide is truncated: page {len(tif.pages)} should start at byte {next_page} but the file has "
            f"{tif.filehandle.size} bytes (an incomplete download?)",
        )
    return shapes


def _truncated(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> bool:
    size = tif.filehandle.size
    return any(o + n > size for o, n in zip(page.dataoffsets, page.databytecounts, strict=True) if n)


def next_ifd_offset(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> int:
    """The "next IFD" offset stored after ``page``'s tags (0 for the last page of a complete file).

    tifffile exposes the layout of the IFD (``TiffFile.tiff``: sizes and struct formats of the tag count, a tag
    and an offset) but not this pointer, so it is read here, in this one place (``tests/test_remote.py`` checks it
    on a complete and on a truncated slide).
    """
    fmt, fh = tif.tiff, tif.filehandle
    with fh.lock:
        fh.seek(page.offset)
        (count,) = struct.unpack(fmt.tagnoformat, fh.read(fmt.tagnosize))
        fh.seek(page.offset + fmt.tagnosize + count * fmt.tagsize)
        raw = fh.read(fmt.offsetsize)
    return struct.unpack(fmt.offsetformat, raw)[0] if len(raw) == fmt.offsetsize else -1
