"""The slide's own writer (hest_spatialdata.writer.image): same store as spatialdata's, any zarr store, safe failure."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import spatialdata as sd
import tifffile
import xarray as xr
import zarr

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.readers.sample import read_hest
from hest_spatialdata.storage.store import DEFAULT_RASTER_COMPRESSOR, convert_sample
from hest_spatialdata.writer.image import start_image_write, write_image_metadata

from .helpers import copy_sample


def _files(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*") if p.is_file()}


@pytest.mark.parametrize("raster_compressor", [DEFAULT_RASTER_COMPRESSOR, None, {"lz4": 3}])
def test_slide_store_equals_the_one_spatialdata_writes(hest_root, tmp_path, raster_compressor):
    ours = convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["he"], raster_compressor=raster_compressor)
    theirs = tmp_path / "spatialdata.zarr"
    read_hest(hest_root, EXAMPLE_SAMPLE_ID, elements=["he"]).write(theirs, raster_compressor=raster_compressor)
    # every metadata document (group and array attributes, codecs, chunk grids, consolidated metadata) and chunk
    ours_files, theirs_files = _files(ours), _files(theirs)
    assert ours_files.keys() == theirs_files.keys()
    for name, data in theirs_files.items():
        if name.endswith("zarr.json"):
            assert json.loads(ours_files[name]) == json.loads(data), name
        else:
            assert ours_files[name] == data, name
    # and as spatialdata reads them back: element, scales, coordinates, transformations, attributes, pixels
    a, b = sd.read_zarr(ours), sd.read_zarr(theirs)
    assert a.attrs == b.attrs
    tree_a, tree_b = a.images["he"], b.images["he"]
    assert list(tree_a.children) == list(tree_b.children)
    for scale in tree_b.children:
        xr.testing.assert_identical(tree_a[scale]["image"], tree_b[scale]["image"])
        assert tree_a[scale]["image"].attrs == tree_b[scale]["image"].attrs
    for level in ("he", "he/s0", "he/s3"):
        ga = zarr.open(ours / "images" / level, mode="r")
        assert dict(ga.attrs) == dict(zarr.open(theirs / "images" / level, mode="r").attrs)


def test_writer_streams_into_any_zarr_store():
    # an fsspec store (object storage goes the same way), levels of any size, blocks larger than the chunks
    rng = np.random.default_rng(0)
    levels = [rng.integers(0, 256, (700, 517, 3), dtype=np.uint8), rng.integers(0, 256, (350, 258, 3), dtype=np.uint8)]
    store = zarr.storage.FsspecStore.from_url(f"memory://writer-test-{time.time_ns()}")
    group = zarr.create_group(store).create_group("images").create_group("he")
    start_image_write(group, levels, chunk_size=128, raster_compressor={"zstd": 1}, threads=3, block_size=256).result()
    write_image_metadata(
        group, [(3, *lv.shape[:2]) for lv in levels], channels=["r", "g", "b"], coordinate_systems={"global": None}
    )
    reopened = zarr.open_group(store, path="images/he", mode="r")
    for k, level in enumerate(levels):
        assert np.array_equal(reopened[f"s{k}"][:], level.transpose(2, 0, 1))
        assert reopened[f"s{k}"].chunks == (3, 128, 128)
    datasets = reopened.attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [[1.0, 1.0, 1.0], [1.0, 2.0, 517 / 258]]


def _damage_a_tile_deep_in_the_slide(root: Path, sample_id: str) -> None:
    tif_path = root / "wsis" / f"{sample_id}.tif"
    with tifffile.TiffFile(tif_path) as tif:
        page = tif.series[0].levels[0].keyframe
        index = len(page.dataoffsets) - 2  # one of the last tiles of level 0: most chunks are written before it
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(tif_path, "r+b") as f:
        f.seek(offset)
        f.write(bytes(range(256)) * (count // 256) + b"\xff" * (count % 256))


def test_a_failure_while_writing_leaves_nothing(hest_root, tmp_path):
    root = copy_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path / "hest", "DAMAGED")
    _damage_a_tile_deep_in_the_slide(root, "DAMAGED")
    out = tmp_path / "out"
    with pytest.raises(HestInputError, match=r"DAMAGED.*DAMAGED\.tif.*slide damaged: tile \d+ cannot be decoded"):
        convert_sample(root, "DAMAGED", out, chunk_size=256)
    assert list(out.iterdir()) == []
    time.sleep(0.5)  # a writer thread finishing late would show up now
    assert list(out.iterdir()) == []


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing past the limit fails with EFBIG, as a full disk with ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # metadata fits, no image chunk does
from hest_spatialdata.storage.store import convert_sample
try:
    convert_sample(sys.argv[1], sys.argv[2], sys.argv[3])
except OSError as e:
    print("failed", e.errno)
"""


def test_a_full_disk_leaves_nothing(hest_root, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(hest_root), EXAMPLE_SAMPLE_ID, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and run.stdout.startswith("failed"), run.stdout + run.stderr
    assert list(out.iterdir()) == []


_SLIDE_ALONE = """
import sys
from hest_spatialdata.storage.store import convert_sample
convert_sample(sys.argv[1], sys.argv[2], sys.argv[3], elements=["he"])
print(sorted(m for m in ("spatialdata", "anndata", "geopandas", "xarray") if m in sys.modules))
"""


def test_a_slide_alone_is_written_without_importing_spatialdata(hest_root, tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", _SLIDE_ALONE, str(hest_root), EXAMPLE_SAMPLE_ID, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
    assert sd.read_zarr(tmp_path / f"{EXAMPLE_SAMPLE_ID}.zarr").attrs["hest"]["elements"] == {"images": ["he"]}


def test_labels_store_equals_the_one_spatialdata_writes(hest_root, tmp_path):
    """``nuclei_labels`` written chunk by chunk (writer/labels.py): every file as spatialdata writes the element."""
    ours = convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["nuclei_labels"], chunk_size=256)
    theirs = tmp_path / "spatialdata.zarr"
    sdata = read_hest(hest_root, EXAMPLE_SAMPLE_ID, elements=["nuclei_labels"], chunk_size=256)
    sdata.write(theirs, raster_compressor=DEFAULT_RASTER_COMPRESSOR)
    ours_files, theirs_files = _files(ours), _files(theirs)
    assert ours_files.keys() == theirs_files.keys()
    assert sum(name.startswith("labels/nuclei_labels/s0/c/") for name in ours_files) > 4  # several chunks, some empty
    for name, data in theirs_files.items():
        if name.endswith("zarr.json"):
            assert json.loads(ours_files[name]) == json.loads(data), name
        else:
            assert ours_files[name] == data, name
    a, b = sd.read_zarr(ours)["nuclei_labels"], sd.read_zarr(theirs)["nuclei_labels"]
    for scale in b.children:
        xr.testing.assert_identical(a[scale]["image"], b[scale]["image"])
