from __future__ import annotations

import subprocess
import sys

import spatialdata as sd
from click.testing import CliRunner

from hest_spatialdata.cli import main
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID


def test_convert_selected_elements(hest_root, tmp_path):
    result = CliRunner().invoke(
        main, ["convert", str(hest_root), "-o", str(tmp_path), "--id", EXAMPLE_SAMPLE_ID, "--elements", "spots,table"]
    )
    assert result.exit_code == 0, result.output
    sdata = sd.read_zarr(tmp_path / f"{EXAMPLE_SAMPLE_ID}.zarr")
    assert set(sdata.shapes) == {"spots"} and set(sdata.tables) == {"table"} and not sdata.images
    assert sdata.attrs["hest"]["elements"] == {"shapes": ["spots"], "tables": ["table"]}


def test_unknown_element_is_a_usage_error(hest_root, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(hest_root), "-o", str(tmp_path), "--elements", "spots,cells"])
    assert result.exit_code == 2
    assert "unknown element(s) cells" in result.output


def test_existing_store_is_skipped_unless_overwrite(hest_root, tmp_path):
    args = ["convert", str(hest_root), "-o", str(tmp_path), "--elements", "spots", "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    store = tmp_path / f"{EXAMPLE_SAMPLE_ID}.zarr"
    before = (store / "zarr.json").stat().st_mtime_ns
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "skipped" in again.output
    assert (store / "zarr.json").stat().st_mtime_ns == before
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
    assert (store / "zarr.json").stat().st_mtime_ns != before


def test_a_foreign_folder_in_the_way_is_never_touched(hest_root, tmp_path):
    foreign = tmp_path / f"{EXAMPLE_SAMPLE_ID}.zarr"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["convert", str(hest_root), "-o", str(tmp_path), "--elements", "spots"])
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_demo_builds_converts_and_explains(tmp_path):
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    store = tmp_path / f"{EXAMPLE_SAMPLE_ID}.zarr"
    assert f"SpatialData store: {store}" in result.output
    assert "sd.read_zarr" in result.output and "napari" in result.output
    sdata = sd.read_zarr(store)
    assert {"he"} <= set(sdata.images) and {"spots"} <= set(sdata.shapes)
    rerun = CliRunner().invoke(main, ["demo", "-o", str(tmp_path)])
    assert rerun.exit_code == 0 and "exists" in rerun.output


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "hest_spatialdata", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "convert" in result.stdout and "demo" in result.stdout
