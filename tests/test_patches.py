from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import shapely
import spatialdata as sd
from spatialdata.transformations import Identity, get_transformation

from hest_spatialdata._constants import Technology
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.readers.patches import patch_side_px, read_patches
from hest_spatialdata.readers.sample import read_hest

from .helpers import TEST_PIXEL_SIZE_UM, xy_scale

SID = EXAMPLE_SAMPLE_ID
#: 224 px at 0.5 µm/px = 112 µm = 56 px of the 2 µm/px test slide.
SIDE_PX = 56


@pytest.fixture(scope="module")
def h5(hest_root):
    with h5py.File(hest_root / "patches" / f"{SID}.h5", "r") as f:
        return {
            "coords": f["coords"][()],
            "barcode": f["barcode"][()],
            "attrs": dict(f["img"].attrs),
            "shape": f["img"].shape,
        }


def copy_root(hest_root: Path, tmp_path: Path) -> Path:
    """The example root with slide and metadata linked and a writable copy of the patches h5."""
    root = tmp_path / "hest"
    for folder in ("wsis", "metadata"):
        (root / folder).mkdir(parents=True)
        for file in (hest_root / folder).iterdir():
            (root / folder / file.name).symlink_to(file)
    (root / "patches").mkdir()
    shutil.copyfile(hest_root / "patches" / f"{SID}.h5", root / "patches" / f"{SID}.h5")
    return root


def test_example_h5_has_hests_layout(h5):
    n = len(h5["coords"])
    assert h5["shape"] == (n, 224, 224, 3)
    assert h5["coords"].dtype == np.int64 and h5["coords"].shape == (n, 2)
    assert h5["barcode"].shape == (n, 1) and isinstance(h5["barcode"][0, 0], bytes)
    assert h5["attrs"]["patch_size"] == 224
    assert h5["attrs"]["factor"] == pytest.approx(0.5 / TEST_PIXEL_SIZE_UM)


def test_store_patches_are_the_h5_footprints(sdata, h5):
    patches = sdata["patches"]
    assert list(patches.index) == [b.decode() for b in h5["barcode"][:, 0]]
    x, y = h5["coords"][:, 0], h5["coords"][:, 1]
    expected = shapely.box(x, y, x + SIDE_PX, y + SIDE_PX)
    assert shapely.equals(patches.geometry.to_numpy(), expected).all()
    np.testing.assert_array_equal(shapely.bounds(patches.geometry.to_numpy()), np.column_stack([x, y, x + 56, y + 56]))
    assert get_transformation(patches, "global") == Identity()
    np.testing.assert_allclose(xy_scale(get_transformation(patches, "microns")), TEST_PIXEL_SIZE_UM)
    extent = sd.get_extent(patches, coordinate_system="microns")
    np.testing.assert_allclose(extent["x"][1] - extent["x"][0], (x.max() + 56 - x.min()) * TEST_PIXEL_SIZE_UM)


def test_patches_are_centred_on_their_spots(sdata):
    patches, spots = sdata["patches"], sdata["spots"]
    assert set(patches.index) <= set(spots.index)
    centres = shapely.get_coordinates(spots.geometry.loc[patches.index])
    np.testing.assert_allclose(shapely.get_coordinates(patches.centroid), centres, atol=1)
    # a patch is 112 µm: it covers its 55 µm spot
    assert patches.geometry.contains(
        spots.geometry.loc[patches.index].buffer(55 / 2 / TEST_PIXEL_SIZE_UM), align=False
    ).all()


def test_bounding_box_query_patches(sdata):
    patches = sdata["patches"]
    queried = sd.bounding_box_query(patches, ("x", "y"), [0, 0], [1000, 800], target_coordinate_system="global")
    assert 0 < len(queried) < len(patches)
    assert set(queried.index) == set(patches.index[patches.intersects(shapely.box(0, 0, 1000, 800))])


@pytest.mark.parametrize(
    ("attrs", "slide_um", "side"),
    [
        ({"patch_size": 224, "factor": 2.0}, 0.25, 448),  # a 40x slide: 224 px at 0.5 µm/px = 448 level-0 px
        ({"patch_size": 224, "factor": 0.5 / 0.2738}, 0.2738, 409),  # TENX68's pixel size
        ({"patch_size": 224}, 0.2125, 527),  # no factor: HEST's 0.5 µm/px target
        ({}, 2.0, 56),
    ],
)
def test_patch_side_formula(attrs, slide_um, side):
    assert patch_side_px(attrs, slide_um) == side


def test_hest_root_without_patches_writes_no_patches(hest_root, tmp_path):
    root = copy_root(hest_root, tmp_path)
    (root / "patches" / f"{SID}.h5").unlink()
    sdata = read_hest(root, SID, elements=["patches", "nuclei"])
    assert not sdata.shapes


def test_truncated_h5_names_sample_and_file(hest_root, tmp_path):
    root = copy_root(hest_root, tmp_path)
    path = root / "patches" / f"{SID}.h5"
    data = path.read_bytes()
    path.write_bytes(data[:4096])
    with pytest.raises(HestInputError, match=rf"sample {SID} .*patches.*{SID}\.h5.*unreadable or truncated"):
        read_hest(root, SID, elements=["patches"])


def test_inconsistent_h5_is_rejected(hest_root, tmp_path):
    root = copy_root(hest_root, tmp_path)
    path = root / "patches" / f"{SID}.h5"
    with h5py.File(path, "a") as f:
        barcodes = f["barcode"][:-1]
        del f["barcode"]
        f.create_dataset("barcode", data=barcodes, dtype=h5py.string_dtype("utf-8"))
    with pytest.raises(HestInputError, match=rf"sample {SID} .*coords but .* barcodes"):
        read_hest(root, SID, elements=["patches"])


def test_patches_off_the_slide_are_rejected(hest_root, tmp_path):
    root = copy_root(hest_root, tmp_path)
    with h5py.File(root / "patches" / f"{SID}.h5", "a") as f:
        f["coords"][0] = [100_000, 50]  # a spot of another, larger slide
    with pytest.raises(HestInputError, match=rf"sample {SID} .*{SID}\.h5.*1 patches \(coords\) lie outside"):
        read_hest(root, SID, elements=["patches"])


def test_patches_partly_off_the_slide_are_kept(tmp_path):
    """HEST keeps patches partly off the slide (their pixels are padding)."""
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("coords", data=np.array([[-20, -20], [980, 480]], dtype=np.int64))
        f.create_dataset("barcode", data=np.array([[b"a"], [b"b"]], dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("img", shape=(2, 224, 224, 3), dtype=np.uint8).attrs.update(
            {"patch_size": 224, "factor": 0.25}
        )
    ctx = SampleContext("X1", 2.0, Technology.VISIUM, (500, 1000))
    patches = read_patches(path, ctx)
    assert list(patches.index) == ["a", "b"]
    np.testing.assert_array_equal(shapely.bounds(patches.geometry.to_numpy())[1], [980, 480, 1036, 536])
