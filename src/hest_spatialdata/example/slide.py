"""The example slide: an H&E texture from the real tile, written as HEST's pyramidal TIFF (pyvips or tifffile)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from hest_spatialdata.example.sources import he_tile

SlideWriter = Literal["auto", "pyvips", "tifffile"]


def he_texture(height: int, width: int, *, seed: int = 0, tissue_mask: np.ndarray | None = None) -> np.ndarray:
    """An RGB uint8 H&E-looking slide: the real tile mirrored and rotated at random, with scanner-like noise.

    Parameters
    ----------
    height, width
        Size in pixels.
    seed
        Random seed.
    tissue_mask
        Optional boolean mask (any resolution, resized to the slide): outside it the slide is glass background.
    """
    rng = np.random.default_rng(seed)
    tile = he_tile()
    side = tile.shape[0]
    image = np.empty((height, width, 3), np.uint8)
    for y in range(0, height, side):
        for x in range(0, width, side):
            t = np.rot90(tile, k=int(rng.integers(4)))
            if rng.random() < 0.5:
                t = t[::-1]
            h, w = min(side, height - y), min(side, width - x)
            image[y : y + h, x : x + w] = t[:h, :w]
    if tissue_mask is not None:
        mask = np.asarray(Image.fromarray(tissue_mask.astype(np.uint8) * 255).resize((width, height), Image.BILINEAR))
        glass = np.array([242, 240, 244], np.uint8)
        image[mask < 128] = glass
    noise = rng.normal(0, 1.5, size=image.shape).round().astype(np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_slide(path: str | Path, image: Any, pixel_size_um: float, *, writer: SlideWriter = "auto") -> Path:
    """Write an RGB slide the way HEST's ``tiff_save`` does.

    libvips ``tiffsave(pyramid=True, tile=True, 256 x 256, compression="lzw", bigtiff when > 4 GB)`` with the
    resolution in px/cm computed as ``1 / (pixel_size * 1e-4)`` while libvips expects px/mm: the tags read 10x
    too small a pixel size, as on the hub. Without pyvips, tifffile writes the same layout (one page per level,
    each a 2x2 mean of the one above, sizes rounded down as libvips 8.18 does).

    Parameters
    ----------
    path
        Output ``.tif``.
    image
        An (h, w, 3) uint8 array, or a ``pyvips.Image`` (streamed, for slides larger than memory).
    pixel_size_um
        True µm per pixel (written 10x off, as HEST does).
    writer
        ``"pyvips"`` (HEST's writer), ``"tifffile"``, or ``"auto"`` (pyvips when installed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "auto":
        writer = "pyvips" if _has_pyvips() else "tifffile"
    xres = 1 / (pixel_size_um * 1e-4)  # HEST's value: px per cm, handed to libvips as px per mm
    if writer == "pyvips":
        import pyvips

        vips = image if isinstance(image, pyvips.Image) else pyvips.Image.new_from_array(np.asarray(image))
        bigtiff = vips.width * vips.height * vips.bands > 4 * 1024**3
        vips.tiffsave(
            str(path), pyramid=True, tile=True, tile_width=256, tile_height=256, compression="lzw",
            bigtiff=bigtiff, resunit="cm", xres=xres, yres=xres,
        )  # fmt: skip
        return path
    _write_slide_tifffile(path, np.asarray(image), xres)
    return path


def _write_slide_tifffile(path: Path, image: np.ndarray, xres: float) -> None:
    import tifffile

    # libvips stores xres in px/mm and converts to the unit asked: the tag holds xres * 10 px/cm.
    resolution = (xres * 10, xres * 10)
    with tifffile.TiffWriter(path, bigtiff=image.nbytes > 4 * 1024**3) as tif:
        level, subfiletype = image, 0
        while True:
            tif.write(
                level, tile=(256, 256), compression="lzw", photometric="rgb", subfiletype=subfiletype,
                resolution=resolution, resolutionunit="CENTIMETER", software="libvips",
            )  # fmt: skip
            if max(level.shape[:2]) <= 256:
                break
            level, subfiletype = _halve(level), 1


def _halve(level: np.ndarray) -> np.ndarray:
    h, w = level.shape[0] // 2, level.shape[1] // 2
    blocks = level[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).astype(np.uint16)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


def _has_pyvips() -> bool:
    try:
        import pyvips  # noqa: F401
    except (ImportError, OSError):
        return False
    return True
