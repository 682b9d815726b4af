"""The one conversion path: ``hs.convert`` is the resumable batch the CLI runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import spatialdata as sd

import hest_spatialdata as hs
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.source.layout import PARTS, Part, PatchesKeys

SID = EXAMPLE_SAMPLE_ID


def _snapshot(store: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(store)): (p.stat().st_size, p.stat().st_mtime_ns) for p in store.rglob("*") if p.is_file()
    }


def test_convert_twice_keeps_the_complete_store(hest_root, tmp_path):
    first = hs.convert(hest_root, tmp_path, [SID], elements=["spots", "table"])
    assert [(r.sample_id, r.status) for r in first.results] == [(SID, "done")]
    store = tmp_path / f"{SID}.zarr"
    before = _snapshot(store)
    second = hs.convert(hest_root, tmp_path, [SID], elements=["spots", "table"])
    assert [(r.sample_id, r.status) for r in second.results] == [(SID, "skipped")]
    assert _snapshot(store) == before


def test_bad_sample_is_reported_after_the_good_one_is_written(hest_root, tmp_path):
    with pytest.raises(hs.ConversionError, match="NOSUCH42") as err:
        hs.convert(hest_root, tmp_path, ["NOSUCH42", SID], elements=["spots", "table"])
    by_id = {r.sample_id: r for r in err.value.summary.results}
    assert by_id[SID].status == "done" and by_id["NOSUCH42"].status == "failed"
    assert "unknown sample id" in by_id["NOSUCH42"].reason
    assert sd.read_zarr(tmp_path / f"{SID}.zarr").tables["table"].n_obs > 0
    assert not (tmp_path / "NOSUCH42.zarr").exists()
    # without raising, the same summary comes back
    summary = hs.convert(hest_root, tmp_path, ["NOSUCH42", SID], raise_on_failure=False)
    assert summary.counts() == {"done": 0, "skipped": 1, "failed": 1}


def test_convert_selects_by_the_catalog_filters(hest_root, tmp_path):
    assert hs.convert(hest_root, tmp_path, organ="brain", species="mouse", elements=["spots"]).counts()["done"] == 1
    with pytest.raises(hs.HestInputError, match="no sample selected"):
        hs.convert(hest_root, tmp_path, organ="Breast")
    with pytest.raises(TypeError, match="tissue"):
        hs.convert(hest_root, tmp_path, tissue="Brain")


def test_newer_patches_h5_with_barcodes_dataset(hest_root, tmp_path):
    """Newer HEST writes ``barcodes`` (not ``barcode``) and int32 ``coords`` with attributes."""
    root = tmp_path / "hest"
    for part in (Part.WSI, Part.METADATA):
        source = PARTS[part].path(hest_root, SID)
        (root / source.parent.name).mkdir(parents=True)
        (root / source.parent.name / source.name).symlink_to(source)
    patches = PARTS[Part.PATCHES].path(root, SID)
    patches.parent.mkdir()
    shutil.copyfile(PARTS[Part.PATCHES].path(hest_root, SID), patches)
    with h5py.File(patches, "r+") as f:
        barcodes = f["barcode"][()]
        coords = f["coords"][()]
        del f["barcode"], f["coords"]
        f.create_dataset("barcodes", data=barcodes, dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("coords", data=coords.astype(np.int32))
        f["coords"].attrs["patch_size"] = 224
    assert "barcodes" in PatchesKeys.BARCODES
    hs.convert(root, tmp_path / "out", [SID], elements=["patches"])
    stored = sd.read_zarr(tmp_path / "out" / f"{SID}.zarr").shapes["patches"]
    assert list(stored.index) == [b.decode() for b in barcodes[:, 0]]
    np.testing.assert_array_equal(stored.geometry.bounds[["minx", "miny"]].to_numpy(), coords)
