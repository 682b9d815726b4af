"""Bad input: one clear message naming the sample and the file, a non-zero exit, no partial output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from click.testing import CliRunner

from hest_spatialdata.cli import main
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID

SID = EXAMPLE_SAMPLE_ID


@pytest.fixture
def root(hest_root, tmp_path):
    copy = tmp_path / "hest"
    shutil.copytree(hest_root, copy)
    return copy


def _truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _edit_metadata(root: Path, **changes) -> None:
    path = root / "metadata" / f"{SID}.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def _move_spots(root: Path, dx: float) -> None:
    path = root / "st" / f"{SID}.h5ad"
    adata = ad.read_h5ad(path)
    adata.obsm["spatial"] = adata.obsm["spatial"] + np.array([dx, 0])
    adata.write_h5ad(path)


CASES = {
    "missing slide": (lambda r: (r / "wsis" / f"{SID}.tif").unlink(), f"wsis/{SID}.tif", "required file missing"),
    "truncated slide": (lambda r: _truncate(r / "wsis" / f"{SID}.tif"), f"{SID}.tif", "truncated"),
    "not a tiff": (
        lambda r: (r / "wsis" / f"{SID}.tif").write_bytes(b"GIF89a" + bytes(500)),
        f"{SID}.tif",
        "not a readable TIFF",
    ),
    "missing h5ad": (lambda r: (r / "st" / f"{SID}.h5ad").unlink(), f"st/{SID}.h5ad", "required file missing"),
    "truncated h5ad": (lambda r: _truncate(r / "st" / f"{SID}.h5ad", 0.3), f"{SID}.h5ad", "unreadable or truncated"),
    "truncated metadata": (lambda r: _truncate(r / "metadata" / f"{SID}.json"), f"{SID}.json", "invalid or truncated"),
    "NaN pixel size": (
        lambda r: _edit_metadata(r, pixel_size_um_estimated=float("nan")),
        f"{SID}.json",
        "missing or NaN",
    ),
    "no pixel size": (lambda r: _edit_metadata(r, pixel_size_um_estimated=None), f"{SID}.json", "missing or NaN"),
    "spots off the slide": (lambda r: _move_spots(r, 1e6), f"{SID}.h5ad", "outside the"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly_without_output(root, tmp_path, case):
    corrupt, file_hint, problem = CASES[case]
    corrupt(root)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(root), "-o", str(out), "--id", SID, "--quiet"])
    assert result.exit_code == 1, result.output
    failure = next(line for line in result.output.splitlines() if "failed:" in line)
    assert SID in failure and file_hint in failure and problem in failure
    assert not out.exists() or list(out.iterdir()) == []


def test_unknown_id_lists_the_samples_present(hest_root, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(hest_root), "-o", str(tmp_path / "o"), "--id", "TENX999"])
    assert result.exit_code == 1
    failure = next(line for line in result.output.splitlines() if "failed:" in line)
    assert "TENX999" in failure and "unknown sample id" in failure and SID in failure
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []


def test_one_bad_sample_does_not_hide_the_good_one(root, tmp_path):
    shutil.copy(root / "metadata" / f"{SID}.json", root / "metadata" / "BROKEN1.json")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["convert", str(root), "-o", str(out), "--elements", "spots,table", "--quiet"])
    assert result.exit_code == 1
    assert "BROKEN1: failed:" in result.output
    assert sorted(p.name for p in out.iterdir()) == [f"{SID}.zarr"]
