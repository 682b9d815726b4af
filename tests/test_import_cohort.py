"""Imported 10x runs beside converted HEST samples: one cohort, expression, folds, patches, embed, benchmark, plot."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

import hest_spatialdata as hs
from hest_spatialdata.cli import main

from .helpers import statuses

IMPORTED = "DEMO_VISIUM"


@pytest.fixture(scope="module")
def mixed(cohort_dir: Path, demo_visium_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two converted HEST samples (two patients) and one imported Space Ranger run in one folder."""
    out = tmp_path_factory.mktemp("mixed")
    for sample_id in ("COHV1", "COHST"):
        shutil.copytree(cohort_dir / f"{sample_id}.zarr", out / f"{sample_id}.zarr")
    shutil.copytree(demo_visium_store, out / f"{IMPORTED}.zarr")
    return out


def test_one_table_and_expression_across_converted_and_imported(mixed: Path) -> None:
    import anndata as ad

    cohort = hs.open_cohort(mixed)
    assert sorted(cohort) == ["COHST", "COHV1", IMPORTED]
    row = cohort.table.loc[IMPORTED]
    assert (row["technology"], row["organ"], row["species"], row["patient"]) == (
        "Visium", "Brain", "Mus musculus", "demo-mouse"
    )  # fmt: skip
    assert sorted(hs.open_cohort(mixed, technology="Visium")) == ["COHV1", IMPORTED]  # the filters see it
    adata = cohort.expression(join="inner")
    mine = adata[adata.obs["sample_id"] == IMPORTED]
    table = ad.read_zarr(mixed / f"{IMPORTED}.zarr" / "tables" / "table")
    genes = mine.var_names.intersection(table.var["gene_name"])
    assert len(genes) > 100
    by_name = table[:, table.var["gene_name"].isin(genes).to_numpy()]
    columns = [list(by_name.var["gene_name"]).index(g) for g in genes]
    expected = sp.csr_matrix(by_name.X)[:, columns]
    assert (sp.csr_matrix(mine[:, genes].X) != expected).nnz == 0  # counts unchanged
    folds = cohort.splits(3, seed=0)
    assert sorted(test for _, tests in folds for test in tests) == ["COHST", "COHV1", IMPORTED]


def test_patches_embed_and_benchmark_across_both(mixed: Path) -> None:
    cohort = hs.open_cohort(mixed)
    patches = cohort.patch_dataset(genes=["Gad1", "Penk", "Slc17a7"], patch_size_px=32, um_per_px=4.0)
    samples = {patches[i][2] for i in range(len(patches))}
    assert samples == {"COHST", "COHV1", IMPORTED}
    status = hs.embed(mixed, "histogram", patch_size_px=32, um_per_px=4.0, progress=False)
    assert statuses(status) == dict.fromkeys(["COHST", "COHV1", IMPORTED], "done")
    result = hs.benchmark(mixed, embeddings="histogram", genes=["Gad1", "Penk", "Slc17a7"])
    assert sorted(t for _, tests in result.folds for t in tests) == ["COHST", "COHV1", IMPORTED]
    assert np.isfinite(result.pearson_mean)
    assert hs.validate(mixed / f"{IMPORTED}.zarr").ok  # the embeddings added, the store still valid


def test_plot_draws_an_imported_store(demo_visium_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.png"
    result = CliRunner().invoke(main, ["plot", str(demo_visium_store), "-o", str(out), "--gene", "Gad1"])
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert Image.open(out).size[0] > 200


def test_demo_import_writes_a_run_and_imports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hest_spatialdata.example import spaceranger

    original = spaceranger.write_visium_run
    monkeypatch.setattr(spaceranger, "write_visium_run", lambda folder: original(folder, pixel_size_um=4.0))
    result = CliRunner().invoke(main, ["demo", "--import", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "spaceranger" / "outs" / "filtered_feature_bc_matrix.h5").is_file()
    assert "DEMO_VISIUM.zarr" in result.output and "spots" in result.output
    assert hs.validate(tmp_path / "DEMO_VISIUM.zarr", tmp_path / "spaceranger").ok


def test_import_into_object_storage(demo_visium_run: tuple[Path, Path], s3_bucket) -> None:
    """``-o s3://...``: written locally, then published as ``convert`` publishes (complete or absent)."""
    outs, he = demo_visium_run
    url = s3_bucket.url("imports")
    args = ["import", str(outs), "-o", url, "--id", "S3RUN", "--image", str(he), "--elements", "he,spots,table"]
    result = CliRunner().invoke(main, [*args, "--metadata", "patient=P9", "organ=Brain"])
    assert result.exit_code == 0, result.output
    cohort = hs.open_cohort(url)
    assert list(cohort) == ["S3RUN"] and cohort.table.loc["S3RUN", "patient"] == "P9"
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "exists" in again.output


def test_a_sheet_of_runs_imports_as_a_batch_on_workers(
    demo_visium_run: tuple[Path, Path], demo_visium_hd_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """``import --sheet`` with ``--workers 2``: convert's batch (local processes, a failing run does not stop the
    others, a summary, exit 1), resumable (complete stores skipped)."""
    import pandas as pd

    (outs, he), (hd_outs, hd_he) = demo_visium_run, demo_visium_hd_run
    rows = [
        {"id": "V1", "path": str(outs), "image": str(he), "organ": "Brain", "patient": "P1"},
        {"id": "HD1", "path": str(hd_outs.parent), "image": str(hd_he), "organ": "Brain", "patient": "P2"},
        {"id": "BAD", "path": str(tmp_path / "nothing"), "image": "", "organ": "", "patient": ""},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "stores"
    args = ["import", "--sheet", str(tmp_path / "runs.csv"), "-o", str(out), "--elements", "he,spots,table"]
    result = CliRunner().invoke(main, [*args, "--workers", "2"])
    assert result.exit_code == 1, result.output  # BAD failed, the others were written
    assert "BAD" in result.output and "10x output folder not found" in result.output
    cohort = hs.open_cohort(out)
    assert sorted(cohort) == ["HD1", "V1"]
    assert cohort.table.loc["HD1", "technology"] == "Visium HD" and cohort.table.loc["V1", "patient"] == "P1"
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and again.output.count("skipped") >= 1
