"""Bad input to ``hest-to-sdata import``: one clear message naming the file, exit 1, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hest_spatialdata.cli import main

from .conftest import TENX_DATA


def _import(tmp_path: Path, *args: str) -> tuple[int, str, Path]:
    out = tmp_path / "stores"
    result = CliRunner().invoke(main, ["import", *args, "-o", str(out), "--id", "RUN1"])
    return result.exit_code, result.output, out


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


def _copy_run(outs: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run" / "outs"
    shutil.copytree(outs, copy)
    return copy


def test_a_folder_that_is_no_10x_output(tmp_path: Path) -> None:
    (tmp_path / "hest" / "metadata").mkdir(parents=True)
    code, output, out = _import(tmp_path, str(tmp_path / "hest"))
    assert code == 1 and "not a 10x output folder" in output and str(tmp_path / "hest") in output
    assert _nothing_written(out)
    code, output, _ = _import(tmp_path, str(tmp_path / "missing"))
    assert code == 1 and "10x output folder not found" in output


def test_no_he_found_or_given(demo_visium_run: tuple[Path, Path], tmp_path: Path) -> None:
    outs, _ = demo_visium_run
    copy = _copy_run(outs, tmp_path)
    code, output, out = _import(tmp_path, str(copy))
    assert code == 1 and "pass --image" in output and str(copy) in output
    code, output, out = _import(tmp_path, str(copy), "--image", str(tmp_path / "he.tif"))
    assert code == 1 and "slide not found" in output and "he.tif" in output
    assert _nothing_written(out)


def test_an_he_of_another_size(demo_visium_run: tuple[Path, Path], tmp_path: Path) -> None:
    import tifffile

    outs, _ = demo_visium_run
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.full((600, 800, 3), 240, np.uint8), photometric="rgb")
    code, output, out = _import(tmp_path, str(outs), "--image", str(small))
    assert code == 1 and "small.tif" in output and "not the image the spots were placed on" in output
    assert "tissue_hires_image.png" in output and _nothing_written(out)


def test_spots_off_the_he(section1_he: Path, tmp_path: Path) -> None:
    """A Loupe alignment that puts the spots beyond the slide (a wrong alignment file)."""
    import pandas as pd

    positions = pd.read_csv(
        TENX_DATA / "visium_section1" / "outs" / "spatial" / "tissue_positions_list.csv", header=None
    )
    oligo = [
        {"row": int(r[2]), "col": int(r[3]), "imageX": float(r[5]) + 20_000, "imageY": float(r[4])}
        for r in positions.itertuples(index=False)
    ]
    alignment = tmp_path / "alignment.json"
    alignment.write_text(json.dumps({"oligo": oligo}))
    code, output, out = _import(
        tmp_path, str(TENX_DATA / "visium_section1"), "--image", str(section1_he), "--alignment", str(alignment)
    )
    assert code == 1 and "alignment.json" in output and "lie outside" in output and _nothing_written(out)


def test_an_unknown_chemistry(demo_visium_run: tuple[Path, Path], tmp_path: Path) -> None:
    import h5py

    outs, he = demo_visium_run
    copy = _copy_run(outs, tmp_path)
    with h5py.File(copy / "filtered_feature_bc_matrix.h5", "r+") as f:
        f.attrs["chemistry_description"] = np.bytes_("Single Cell 5' PE")  # a Cell Ranger run, not Visium
    code, output, out = _import(tmp_path, str(copy), "--image", str(he))
    assert code == 1 and "unknown chemistry" in output and "filtered_feature_bc_matrix.h5" in output
    assert _nothing_written(out)


def test_visium_hd_without_the_16_um_bins(demo_visium_hd_run: tuple[Path, Path], tmp_path: Path) -> None:
    outs, he = demo_visium_hd_run
    copy = _copy_run(outs, tmp_path)
    shutil.rmtree(copy / "binned_outputs" / "square_016um")
    code, output, out = _import(tmp_path, str(copy), "--image", str(he))
    assert code == 1 and "square_016um" in output and "16 µm bins" in output and _nothing_written(out)


def test_barcodes_without_a_position(section1_he: Path, tmp_path: Path) -> None:
    code, output, out = _import(tmp_path, str(TENX_DATA / "visium_section2"), "--image", str(section1_he))
    assert code == 1 and "tissue_positions_list.csv" in output and "have no position" in output
    assert _nothing_written(out)


@pytest.mark.parametrize("item", ["pixel_size_um_estimated=0.5", "organ"])
def test_bad_metadata(demo_visium_run: tuple[Path, Path], tmp_path: Path, item: str) -> None:
    outs, he = demo_visium_run
    code, output, out = _import(tmp_path, str(outs), "--image", str(he), "--metadata", item)
    assert code != 0 and ("computed from the run" in output or "KEY=VALUE" in output) and _nothing_written(out)


def test_an_existing_store_is_kept(demo_visium_run: tuple[Path, Path], tmp_path: Path) -> None:
    outs, he = demo_visium_run
    args = (str(outs), "--image", str(he), "--elements", "spots,table")
    code, output, out = _import(tmp_path, *args, "--metadata", "organ=Brain")
    assert code == 0, output
    before = (out / "RUN1.zarr" / "zarr.json").read_bytes()
    code, output, _ = _import(tmp_path, *args)
    assert code == 1 and "exists" in output and "--overwrite" in output
    assert (out / "RUN1.zarr" / "zarr.json").read_bytes() == before
    # several KEY=VALUE after one --metadata, as a shell passes `species="Mus musculus"`
    code, output, _ = _import(
        tmp_path, *args, "--overwrite", "--metadata", "species=Mus musculus", "patient=P1", "age=7"
    )
    assert code == 0, output
    hest = json.loads((out / "RUN1.zarr" / "zarr.json").read_text())["attributes"]["hest"]
    assert hest["species"] == "Mus musculus" and hest["organ"] is None
    assert (hest["metadata"]["patient"], hest["metadata"]["age"]) == ("P1", 7)
