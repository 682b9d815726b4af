from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner

from hest_spatialdata.cli import main
from hest_spatialdata.validate import validate


@pytest.fixture
def store_copy(visium_store: Path, tmp_path: Path) -> Path:
    """A copy of the converted example store, free to tamper with."""
    return Path(shutil.copytree(visium_store, tmp_path / visium_store.name))


def _failed(report) -> dict[str, str]:
    return {check.name: check.detail for check in report.failures}


def test_a_converted_store_is_valid_against_its_source(visium_store, hest_root):
    report = validate(visium_store, hest_root)
    assert report.ok, str(report)
    names = [check.name for check in report.checks]
    for expected in (
        "readable",
        "elements listed in attrs['hest']",
        "image he: coordinate systems",
        "shape spots: coordinate systems",
        "elements match the source",
        "image he: level 0 pixels",
        "shape spots: radii",
        "spots: centres = obsm['spatial']",
        "table table: X",
        "metadata = metadata/EXAMPLE1.json",
    ):
        assert expected in names, names
    level_checks = [name for name in names if name.startswith("image he: level")]
    assert len(level_checks) >= 4  # every pyramid level compared
    assert validate(visium_store).ok  # structure only


def test_a_changed_pixel_chunk_is_found(store_copy, hest_root):
    level0 = zarr.open_array(store_copy / "images" / "he" / "s0", mode="r+")
    level0[1, 10:20, 2100:2110] = 0
    report = validate(store_copy, hest_root)
    assert not report.ok
    failed = _failed(report)
    assert list(failed) == ["image he: level 0 pixels"]
    origin = 2100 // level0.chunks[2] * level0.chunks[2]  # the chunk holding the changed pixels
    assert f"first at (c, y, x) = (0, 0, {origin})" in failed["image he: level 0 pixels"]
    assert validate(store_copy).ok  # the structure is still fine: only the source tells


def test_a_dropped_spot_is_found(store_copy, hest_root):
    parquet = store_copy / "shapes" / "spots" / "shapes.parquet"
    spots = gpd.read_parquet(parquet)
    dropped = spots.index[7]
    spots.drop(index=dropped).to_parquet(parquet)
    failed = _failed(validate(store_copy, hest_root))
    assert f"missing 1, e.g. {dropped!r}" in failed["shape spots: rows and index"]
    assert "spots: centres = obsm['spatial']" in failed
    assert dropped in failed["table table: annotates"]  # the table still has a row for it


def test_a_missing_element_is_found(store_copy, hest_root):
    shutil.rmtree(store_copy / "images" / "he")
    report = validate(store_copy, hest_root)
    failed = _failed(report)
    assert failed["elements on disk"] == "missing images/he"
    assert "readable" in failed


def _scale_spots(store: Path, scale: float) -> None:
    """Rewrite the spots' ``microns`` scale, in their zarr.json and in the root's consolidated metadata."""
    for path, keys in (
        (store / "shapes" / "spots" / "zarr.json", ("attributes",)),
        (store / "zarr.json", ("consolidated_metadata", "metadata", "shapes/spots", "attributes")),
    ):
        meta = json.loads(path.read_text())
        attrs = meta
        for key in keys:
            attrs = attrs[key]
        (microns,) = [t for t in attrs["coordinateTransformations"] if t["output"]["name"] == "microns"]
        microns["scale"] = [scale, scale]
        path.write_text(json.dumps(meta))


def test_a_wrong_coordinate_system_is_found(store_copy, tmp_path):
    _scale_spots(store_copy, 2.5)
    failed = _failed(validate(store_copy))
    assert "expected Scale(2.0, 2.0)" in failed["shape spots: coordinate systems"]
    assert not validate(tmp_path / "nothing.zarr").ok


def test_cli_validate_exit_codes(visium_store, store_copy, tmp_path):
    shutil.rmtree(store_copy / "shapes" / "spots")
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(visium_store)], env={"COLUMNS": "200"})
    assert ok.exit_code == 0, ok.output
    assert "valid" in ok.output
    report = tmp_path / "reports.json"
    bad = runner.invoke(main, ["validate", str(visium_store), str(store_copy), "--json", str(report)])
    assert bad.exit_code == 1
    assert f"invalid: {store_copy}: elements on disk: missing shapes/spots" in bad.output
    assert [r["ok"] for r in json.loads(report.read_text())] == [True, False]


def test_elements_added_by_embed_are_checked_not_reported_as_unknown(store_copy, hest_root):
    import hest_spatialdata as hs

    hs.embed(store_copy, "histogram", patch_size_px=32, um_per_px=4.0, progress=False)
    report = validate(store_copy, hest_root)
    assert report.ok, str(report)
    checks = {check.name: check.detail for check in report.checks}
    assert checks["elements in attrs['hest']['added']"] == "shapes/histogram_patches, tables/histogram_embeddings"
    assert "elements not listed" not in checks  # they are accounted for, not unknown
    assert "not in the source" not in checks["elements match the source"]
    assert checks["table histogram_embeddings: annotates"].startswith("histogram_patches")
    assert checks["table histogram_embeddings: one row per shape"] == "1554 rows, 1554 shapes"
    assert "shape histogram_patches: coordinate systems" in checks
    # a patch square without its embedding: the table annotates them still, but not one row per shape
    parquet = store_copy / "shapes" / "histogram_patches" / "shapes.parquet"
    squares = gpd.read_parquet(parquet)
    extra = squares.iloc[[0]].set_axis(["not-a-spot"])
    gpd.GeoDataFrame(pd.concat([squares, extra])).to_parquet(parquet)
    failed = _failed(validate(store_copy, hest_root))
    assert list(failed) == ["table histogram_embeddings: one row per shape"]
    assert failed["table histogram_embeddings: one row per shape"] == "1554 rows, 1555 shapes: not the same ids"
    # the same elements, not recorded as added (as another tool would add them): not in the source
    root = zarr.open_group(store_copy, mode="r+", use_consolidated=False)
    root.attrs["hest"] = {k: v for k, v in root.attrs["hest"].items() if k != "added"}
    failed = _failed(validate(store_copy, hest_root))
    assert list(failed) == ["elements match the source"]
    assert failed["elements match the source"].endswith("shapes/histogram_patches, tables/histogram_embeddings")
