from __future__ import annotations

import subprocess
import sys

import spatialdata as sd
from click.testing import CliRunner

from hest_spatialdata.cli import main
from hest_spatialdata.testing import EXAMPLE_SAMPLE_ID


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


def test_existing_store_needs_overwrite(hest_root, tmp_path):
    args = ["convert", str(hest_root), "-o", str(tmp_path), "--elements", "spots", "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0


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
