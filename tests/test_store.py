from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import spatialdata as sd
from spatialdata import SpatialData
from spatialdata.transformations import Identity, get_transformation

from hest_spatialdata._version import __version__
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.storage.store import StoreExistsError, convert_sample, store_is_complete

from .helpers import TEST_PIXEL_SIZE_UM, xy_scale


def test_attrs_describe_the_source(visium_store, hest_root):
    hest = sd.read_zarr(visium_store).attrs["hest"]
    assert hest["sample_id"] == EXAMPLE_SAMPLE_ID
    assert hest["technology"] == "Visium"
    assert hest["species"] == "Mus musculus" and hest["organ"] == "Brain"
    assert hest["pixel_size_um"] == TEST_PIXEL_SIZE_UM
    assert hest["converter"] == "hest-spatialdata" and hest["converter_version"] == __version__
    wsi = hest["source_files"]["wsi"]
    assert wsi["name"] == f"wsis/{EXAMPLE_SAMPLE_ID}.tif"
    assert wsi["size"] == (hest_root / wsi["name"]).stat().st_size
    assert {"wsi", "st", "metadata"} <= set(hest["source_files"])
    assert hest["elements"]["images"] == ["he"]


def test_every_element_is_in_both_coordinate_systems(visium_store):
    sdata = sd.read_zarr(visium_store)
    assert set(sdata.coordinate_systems) == {"global", "microns"}
    for _, name, element in sdata.gen_spatial_elements():
        assert get_transformation(element, "global") == Identity(), name
        np.testing.assert_allclose(xy_scale(get_transformation(element, "microns")), TEST_PIXEL_SIZE_UM)


def test_existing_store_is_untouched_without_overwrite(hest_root, tmp_path):
    store = convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["spots", "table"])
    before = _snapshot(store)
    with pytest.raises(StoreExistsError, match="--overwrite"):
        convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path)
    assert _snapshot(store) == before
    convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, overwrite=True)
    assert "he" in sd.read_zarr(store).images
    assert _siblings(tmp_path) == [f"{EXAMPLE_SAMPLE_ID}.zarr"]


def test_failed_write_leaves_no_store_and_keeps_the_old_one(hest_root, tmp_path, monkeypatch):
    store = convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["spots", "table"])
    before = _snapshot(store)
    original = SpatialData.write_consolidated_metadata  # the last step of a write: every element is written

    def write_then_crash(self):
        original(self)
        raise KeyboardInterrupt  # e.g. Ctrl-C once all chunks were written

    monkeypatch.setattr(SpatialData, "write_consolidated_metadata", write_then_crash)
    with pytest.raises(KeyboardInterrupt):
        convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, overwrite=True)
    assert _snapshot(store) == before
    assert _siblings(tmp_path) == [f"{EXAMPLE_SAMPLE_ID}.zarr"]
    with pytest.raises(KeyboardInterrupt):
        convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path / "fresh")
    assert _siblings(tmp_path / "fresh") == []


def test_stale_partial_of_a_dead_converter_is_cleaned(hest_root, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".{EXAMPLE_SAMPLE_ID}.zarr.partial-{dead.stdout.strip()}-abcd1234"
    (stale / "images").mkdir(parents=True)
    convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["spots"])
    assert _siblings(tmp_path) == [f"{EXAMPLE_SAMPLE_ID}.zarr"]


def test_completeness_check_needs_no_spatialdata(visium_store, tmp_path):
    code = (
        "import sys; from hest_spatialdata.storage.store import store_is_complete; "
        f"ok = store_is_complete({str(visium_store)!r}); "
        "print(ok, 'spatialdata' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False"]
    broken = tmp_path / "broken.zarr"
    shutil.copytree(visium_store, broken)
    shutil.rmtree(broken / "images" / "he")
    assert not store_is_complete(broken)
    assert not store_is_complete(tmp_path / "absent.zarr")


def _siblings(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def _snapshot(store: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns) for p in store.rglob("*") if p.is_file()
    }


def test_a_store_set_aside_by_a_dead_overwrite_comes_back(hest_root, tmp_path):
    """A converter killed between the two renames of an overwrite leaves the old store aside: the next run puts it
    back (never lost); once the new store is in place, what was set aside is deleted."""
    store = convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["spots"])
    before = _snapshot(store)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    aside = tmp_path / f".{EXAMPLE_SAMPLE_ID}.zarr.replaced-{dead.stdout.strip()}-abcd1234"
    store.rename(aside)  # killed after "final -> aside", before "partial -> final"
    with pytest.raises(StoreExistsError, match="exists; pass --overwrite"):
        convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["spots"])
    assert _snapshot(store) == before and _siblings(tmp_path) == [f"{EXAMPLE_SAMPLE_ID}.zarr"]
    shutil.copytree(store, aside)  # killed after both renames, before the clean-up
    convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["spots"], overwrite=True)
    assert _siblings(tmp_path) == [f"{EXAMPLE_SAMPLE_ID}.zarr"]
    # a container reuses process ids: a leftover named with ours is an earlier process's, and is put back too
    ours = tmp_path / f".{EXAMPLE_SAMPLE_ID}.zarr.replaced-{os.getpid()}-abcd1234"
    before = _snapshot(store)
    store.rename(ours)
    with pytest.raises(StoreExistsError, match="exists; pass --overwrite"):
        convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["spots"])
    assert _snapshot(store) == before and _siblings(tmp_path) == [f"{EXAMPLE_SAMPLE_ID}.zarr"]


def test_a_failure_beside_the_labels_stops_them_and_leaves_nothing(hest_root, tmp_path, monkeypatch):
    """The labels are written in their own thread: when another element fails meanwhile, they stop at their next
    chunk, the error is the other element's, and nothing of the store remains."""
    import threading

    from hest_spatialdata.writer import labels as labels_writer

    written, started = [], threading.Event()
    original_setitem = labels_writer._ChunkTarget.__setitem__

    def slow_setitem(self, key, values):  # a big slide's labels: many chunks still to write
        started.set()
        written.append(key)
        time.sleep(0.05)
        original_setitem(self, key, values)

    def failing_write_element(self, name, **kwargs):
        started.wait(30)
        raise OSError(f"disk full while writing {name}")

    monkeypatch.setattr(labels_writer._ChunkTarget, "__setitem__", slow_setitem)
    monkeypatch.setattr(SpatialData, "write_element", failing_write_element)
    with pytest.raises(OSError, match="disk full"):
        convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path, elements=["nuclei", "nuclei_labels"], chunk_size=64)
    assert _siblings(tmp_path) == []
    import tifffile

    with tifffile.TiffFile(hest_root / "wsis" / f"{EXAMPLE_SAMPLE_ID}.tif") as tif:
        height, width = tif.pages[0].shape[:2]
    assert 0 < len(written) < (-(-height // 64) * -(-width // 64)) // 4  # stopped long before level 0 was done
