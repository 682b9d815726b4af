from __future__ import annotations

import numpy as np
import pytest
import spatialdata as sd
import tifffile
from spatialdata.transformations import Identity, Scale, get_transformation

from hest_spatialdata.example import EXAMPLE_SAMPLE_ID, write_slide
from hest_spatialdata.readers.wsi import read_wsi, slide_levels

from .helpers import TEST_PIXEL_SIZE_UM, xy_scale


def _tiff_levels(path):
    with tifffile.TiffFile(path) as tif:
        return [level.asarray() for level in tif.series[0].levels]


def test_every_level_equals_the_tiff_level(hest_root, visium_store):
    he = sd.read_zarr(visium_store)["he"]
    levels = _tiff_levels(hest_root / "wsis" / f"{EXAMPLE_SAMPLE_ID}.tif")
    assert len(he.children) == len(levels) >= 4
    for k, expected in enumerate(levels):
        image = he[f"scale{k}"]["image"]
        assert image.dtype == np.uint8
        assert list(image.coords["c"].values) == ["r", "g", "b"]
        np.testing.assert_array_equal(image.data.compute().transpose(1, 2, 0), expected)


def test_image_chunks_are_tile_aligned(visium_store):
    image = sd.read_zarr(visium_store)["he"]["scale0"]["image"]
    y_chunks, x_chunks = image.data.chunks[1], image.data.chunks[2]
    assert all(c % 256 == 0 for c in y_chunks[:-1] + x_chunks[:-1])
    assert image.data.chunks[0] == (3,)


def test_image_transforms_and_level_scales(visium_store):
    sdata = sd.read_zarr(visium_store)
    he = sdata["he"]
    assert get_transformation(he, "global") == Identity()
    microns = get_transformation(he, "microns")
    assert isinstance(microns, Scale)
    np.testing.assert_allclose(xy_scale(microns), [TEST_PIXEL_SIZE_UM, TEST_PIXEL_SIZE_UM])
    height, width = he["scale0"]["image"].shape[1:]
    extent = sd.get_extent(he, coordinate_system="microns")
    assert extent["x"] == pytest.approx((0, width * TEST_PIXEL_SIZE_UM))
    assert extent["y"] == pytest.approx((0, height * TEST_PIXEL_SIZE_UM))


def test_tiff_resolution_tags_are_ten_times_off_and_ignored(hest_root, visium_store):
    # HEST writes px/cm where libvips expects px/mm: the tags claim a 10x smaller pixel.
    with tifffile.TiffFile(hest_root / "wsis" / f"{EXAMPLE_SAMPLE_ID}.tif") as tif:
        page = tif.pages[0]
        numerator, denominator = page.tags["XResolution"].value
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        tag_um_per_px = 1e4 / (numerator / denominator)
        assert tag_um_per_px == pytest.approx(TEST_PIXEL_SIZE_UM / 10, rel=1e-3)
        assert page.tilewidth == 256 and page.compression == tifffile.COMPRESSION.LZW
    microns = get_transformation(sd.read_zarr(visium_store)["he"], "microns")
    np.testing.assert_allclose(xy_scale(microns), TEST_PIXEL_SIZE_UM)


def test_pyvips_and_tifffile_writers_give_the_same_layout(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(1100, 700, 3), dtype=np.uint8)
    layouts = {}
    for writer in ("pyvips", "tifffile"):
        path = write_slide(tmp_path / f"{writer}.tif", image, 0.5, writer=writer)
        with tifffile.TiffFile(path) as tif:
            layouts[writer] = [
                (p.shape, p.tilewidth, p.tilelength, p.compression, int(p.subfiletype), p.tags["XResolution"].value)
                for p in tif.pages
            ]
        np.testing.assert_array_equal(_tiff_levels(path)[0], image)
    assert layouts["pyvips"] == layouts["tifffile"]


@pytest.mark.parametrize("shape", [(300, 200), (1, 1), (257, 513)])
def test_single_level_and_odd_sized_slides(tmp_path, shape, ctx_factory):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, size=(*shape, 3), dtype=np.uint8)
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, image, tile=(256, 256) if min(shape) > 16 else None, photometric="rgb")
    assert slide_levels(path) == [shape]
    tree = read_wsi(path, ctx_factory(shape), chunk_size=256)
    assert list(tree.children) == ["scale0"]
    np.testing.assert_array_equal(tree["scale0"]["image"].data.compute().transpose(1, 2, 0), image)


@pytest.fixture
def ctx_factory():
    from hest_spatialdata._constants import Technology
    from hest_spatialdata.readers._context import SampleContext

    return lambda shape: SampleContext("S", 0.5, Technology.VISIUM, shape)
