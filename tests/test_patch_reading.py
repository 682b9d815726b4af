"""Patch reading without spatialdata: the store parts against spatialdata's reading, the resampling against the
previous loader (PIL's bilinear resize of the level-0 crop), bands against single patches, remote against local."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hest_spatialdata._store_parts import StoreFiles, image_levels, read_spot_table, shape_centres
from hest_spatialdata.loaders import PatchDataset


def _previous_loader(sdata, dataset: PatchDataset, index: int) -> np.ndarray:
    """The loader before this change: PIL's RGB bilinear resize of the crop, black off the slide."""
    level = np.asarray(_levels(sdata)[dataset.level].data).transpose(1, 2, 0)
    side = dataset.patch_size_px * dataset.um_per_px / dataset.level_um_per_px
    size = max(1, round(side))
    cx, cy = dataset.centres_px[index]
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    crop = np.zeros((size, size, 3), np.uint8)
    xa, ya = max(x0, 0), max(y0, 0)
    xb, yb = min(x0 + size, level.shape[1]), min(y0 + size, level.shape[0])
    crop[ya - y0 : yb - y0, xa - x0 : xb - x0] = level[ya:yb, xa:xb]
    if size == dataset.patch_size_px:
        return crop
    return np.asarray(Image.fromarray(crop).resize((dataset.patch_size_px,) * 2, Image.BILINEAR))


def _levels(sdata) -> list:
    tree = sdata["he"]
    return [tree[name]["image"] for name in sorted(tree.children, key=lambda n: int(n.removeprefix("scale")))]


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b).mean())


def test_store_parts_equal_spatialdata(visium_store: Path, sdata) -> None:
    """Transformations, level sizes and spot centres read from the files are spatialdata's own."""
    from spatialdata.transformations import get_transformation

    files = StoreFiles(visium_store)
    levels = image_levels(files)
    assert len(levels) == len(_levels(sdata)) > 2
    for level, element in zip(levels, _levels(sdata), strict=True):
        assert level.shape == tuple(element.shape)
        matrix = get_transformation(element, "global").to_affine_matrix(("x", "y"), ("x", "y"))
        np.testing.assert_allclose(level.to_level, np.linalg.inv(matrix), atol=1e-9)
        microns = get_transformation(element, "microns").to_affine_matrix(("x", "y"), ("x", "y"))
        assert level.um_per_px == pytest.approx(np.abs(np.diag(microns)[:2]).max())
    ids, centres = shape_centres(files, "spots")
    spots = sdata["spots"]
    assert list(ids) == list(spots.index.astype(str))
    np.testing.assert_allclose(centres, np.column_stack([spots.geometry.x, spots.geometry.y]))
    table = read_spot_table(files)
    assert table.uns["spatialdata_attrs"]["region"] == "spots"
    assert (table.X != sdata["table"].X).nnz == 0


@pytest.mark.parametrize(
    ("patch_size_px", "um_per_px", "tolerance", "integer"),
    [
        (224, 0.5, 0.01, False),
        (40, 3.0, 0.01, False),
        (20, 5.0, -0.55, False),
        (32, 4.0, -0.49, True),
        (48, 2.0, 0.01, True),
    ],  # fmt: skip
)
def test_patches_equal_the_previous_loader(sdata, patch_size_px, um_per_px, tolerance, integer) -> None:
    """``exact`` is the previous loader pixel for pixel; ``fast`` within its documented tolerance (3-tap blur at 1.5x,
    Gaussian at 2.5x), exact at integer factors (2x here: 64 px of level 0 for 32; 1x: no resampling)."""
    order = np.random.default_rng(0).permutation(len(sdata["table"]))[:60]
    options = {"patch_size_px": patch_size_px, "um_per_px": um_per_px, "level_tolerance": tolerance}
    exact = PatchDataset(sdata, resample="exact", **options)
    fast = PatchDataset(sdata, **options)
    diffs = []
    for i in order.tolist():
        previous = _previous_loader(sdata, exact, i)
        np.testing.assert_array_equal(exact[i][0], previous)
        if integer:
            np.testing.assert_array_equal(fast[i][0], previous)
        diffs.append(_mad(fast[i][0], previous))
    assert np.median(diffs) <= 1 and np.percentile(diffs, 95) <= 15


def test_reduction_fast_close_to_exact(sdata) -> None:
    """A real reduction (1.7x of level 0): ``fast`` within half a grey level of PIL's (median)."""
    exact = PatchDataset(sdata, patch_size_px=33, um_per_px=3.4, level_tolerance=-0.45, resample="exact")
    fast = PatchDataset(sdata, patch_size_px=33, um_per_px=3.4, level_tolerance=-0.45)
    assert exact.level == 0 and round(exact._cutter.size) == 56
    diffs = [_mad(fast[i][0], exact[i][0]) for i in range(0, len(exact), 7)]
    assert 0 < np.median(diffs) <= 1 and np.percentile(diffs, 95) <= 15


def test_bands_batches_and_single_patches_agree(visium_store: Path) -> None:
    ahead = PatchDataset(visium_store, patch_size_px=40, um_per_px=3.0, read_ahead=True, threads=2)
    single = PatchDataset(visium_store, patch_size_px=40, um_per_px=3.0, read_ahead=False, threads=1)
    order = np.random.default_rng(3).permutation(len(ahead))[:200].tolist()
    batch = ahead.__getitems__(order)
    for i, (image, expression, barcode) in zip(order, batch, strict=True):
        np.testing.assert_array_equal(image, single[i][0])
        np.testing.assert_array_equal(expression, single[i][1])
        assert barcode == single.barcodes[i]
    cached = ahead._cutter.cache.nbytes
    assert cached >= 200 * 40 * 40 * 3  # finished patches kept
    np.testing.assert_array_equal(ahead[order[0]][0], batch[0][0])  # a second read copies the kept patch
    ahead[order[0]][0][:] = 0
    np.testing.assert_array_equal(ahead[order[0]][0], batch[0][0])  # ... so a caller cannot spoil it
    copy = pickle.loads(pickle.dumps(ahead))  # what a DataLoader worker gets: no patches, no locks
    assert copy._cutter.cache.nbytes == 0
    np.testing.assert_array_equal(copy[order[1]][0], batch[1][0])
    with pytest.raises(ValueError, match="resample must be one of"):
        PatchDataset(visium_store, resample="nearest")


def test_opening_imports_no_spatialdata(visium_store: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import hest_spatialdata as hs\n"
        "from hest_spatialdata.loaders import PatchDataset\n"
        f"d = PatchDataset({str(visium_store)!r}, genes=None)\n"
        "d[0]; d.__getitems__([1, 2])\n"
        f"c = hs.open_cohort([{str(visium_store)!r}]).patch_dataset(n_genes=5)\n"
        "c[0]\n"
        "print('spatialdata' in sys.modules, 'geopandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_file_url_equals_local_path(visium_store: Path) -> None:
    """A store named by URL is read through fsspec (here its LocalFileSystem), with the same results."""
    local = PatchDataset(visium_store, patch_size_px=32, um_per_px=4.0)
    remote = PatchDataset(f"file://{visium_store}", patch_size_px=32, um_per_px=4.0)
    assert not remote._cutter.chunks.files.local
    for i in (0, 5, len(local) - 1):
        np.testing.assert_array_equal(remote[i][0], local[i][0])
        np.testing.assert_array_equal(remote[i][1], local[i][1])


def test_s3_store_equals_local(visium_store: Path, s3_bucket) -> None:
    """The same dataset over a loopback S3 server (moto): same items, chunks fetched concurrently per band."""
    import s3fs

    from hest_spatialdata.cohort import CohortPatchDataset

    fs = s3fs.S3FileSystem(**s3_bucket.storage_options)
    fs.put(str(visium_store) + "/", f"{s3_bucket.name}/stores/{visium_store.name}", recursive=True)
    url = s3_bucket.url("stores", visium_store.name)
    local = PatchDataset(visium_store, patch_size_px=32, um_per_px=4.0, genes=None)
    remote = PatchDataset(url, patch_size_px=32, um_per_px=4.0, storage_options=s3_bucket.storage_options)
    order = np.random.default_rng(0).permutation(len(local))[:50].tolist()
    for (image, expression, barcode), i in zip(remote.__getitems__(order), order, strict=True):
        np.testing.assert_array_equal(image, local[i][0])
        np.testing.assert_array_equal(expression, local[i][1])
        assert barcode == local.barcodes[i]
    assert s3_bucket.server.requests(f"{s3_bucket.name}/stores/{visium_store.name}/images") > 0
    cohort_local = CohortPatchDataset({"S": visium_store}, patch_size_px=32, um_per_px=4.0, n_genes=5)
    cohort_remote = CohortPatchDataset({"S": url}, patch_size_px=32, um_per_px=4.0, n_genes=5)
    assert cohort_remote.genes == cohort_local.genes
    for a, b in zip(cohort_remote.__getitems__([0, 7]), cohort_local.__getitems__([0, 7]), strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[2:] == b[2:]
