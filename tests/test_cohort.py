"""Cohorts: three converted stores (two Visium samples of one patient, one ST sample of another) used as one."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import hest_spatialdata as hs
from hest_spatialdata.example.cohort import COHORT_SAMPLES, SLASHED_GENE, ST_DROPPED_GENES

from .helpers import TEST_PIXEL_SIZE_UM

VISIUM = ["COHV1", "COHV2"]


@pytest.fixture(scope="module")
def cohort(cohort_dir: Path) -> hs.Cohort:
    return hs.open_cohort(cohort_dir)


def _counts(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x)


def test_table_matches_the_stores(cohort: hs.Cohort, cohort_dir: Path) -> None:
    import anndata as ad

    table = cohort.table
    assert sorted(table.index) == sorted(COHORT_SAMPLES) == sorted(cohort) and len(cohort) == 3
    for sample_id, (technology, patient, disease_state, _) in COHORT_SAMPLES.items():
        row = table.loc[sample_id]
        assert (row["technology"], row["patient"], row["disease_state"]) == (technology, patient, disease_state)
        assert row["path"] == str(cohort_dir / f"{sample_id}.zarr")
        assert row["pixel_size_um"] == TEST_PIXEL_SIZE_UM and row["species"] == "Mus musculus"
        store_table = ad.io.read_zarr(cohort_dir / f"{sample_id}.zarr" / "tables" / "table")
        assert row["n_spots"] == store_table.n_obs and row["n_genes"] == store_table.n_vars
        assert row["n_nuclei"] > 1000 and pd.isna(row["n_cells"])  # no Xenium cells in these samples


def test_opening_reads_no_spatialdata(cohort_dir: Path) -> None:
    import subprocess
    import sys

    code = (
        f"import sys, hest_spatialdata as hs; c = hs.open_cohort({str(cohort_dir)!r}); c.table; "
        "assert 'spatialdata' not in sys.modules and 'dask' not in sys.modules, 'imported'; print(len(c))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


def test_filters_sources_and_bad_input(cohort_dir: Path, tmp_path: Path) -> None:
    assert hs.open_cohort(cohort_dir, technology="Visium").sample_ids == VISIUM
    assert hs.open_cohort(cohort_dir, technology="st").sample_ids == ["COHST"]  # the list command's alias
    assert hs.open_cohort(cohort_dir, species="mouse", disease_state="healthy").sample_ids == ["COHST"]
    assert len(hs.open_cohort(cohort_dir, organ="Kidney")) == 0
    assert hs.open_cohort(str(cohort_dir / "COHV*.zarr")).sample_ids == VISIUM
    assert hs.open_cohort([cohort_dir / "COHST.zarr", cohort_dir / "COHV2.zarr"]).sample_ids == ["COHST", "COHV2"]
    with pytest.raises(TypeError, match="unknown filter"):
        hs.open_cohort(cohort_dir, tissue="Brain")
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(hs.HestInputError, match="junk.zarr.*not a store written by hest-spatialdata"):
        hs.open_cohort(tmp_path)


def test_getitem_is_the_store(cohort: hs.Cohort) -> None:
    sdata = cohort["COHST"]
    assert sdata.attrs["hest"]["sample_id"] == "COHST" and cohort["COHST"] is sdata
    with pytest.raises(KeyError, match="NOPE"):
        cohort["NOPE"]


def test_to_spatialdata_holds_every_element_per_sample(cohort: hs.Cohort) -> None:
    from spatialdata.transformations import get_transformation

    merged = cohort.to_spatialdata()
    expected_spots = 0
    for sample_id in cohort:
        own = cohort[sample_id]
        for _, name, _ in own.gen_spatial_elements():
            element = merged[f"{name}-{sample_id}"]
            assert set(get_transformation(element, get_all=True)) == {f"global-{sample_id}", f"microns-{sample_id}"}
        assert len(merged[f"spots-{sample_id}"]) == len(own["spots"])
        expected_spots += own["table"].n_obs
    n_own = sum(len(list(cohort[s].gen_spatial_elements())) for s in cohort)
    assert len(list(merged.gen_spatial_elements())) == n_own
    assert list(merged.tables) == ["table"]
    table = merged["table"]
    assert table.n_obs == expected_spots
    assert table.uns["spatialdata_attrs"]["region"] == [f"spots-{s}" for s in cohort]
    for sample_id in cohort:
        rows = table.obs["sample_id"] == sample_id
        assert (table.obs.loc[rows, "region"] == f"spots-{sample_id}").all()
        assert set(table.obs.loc[rows, "spot_id"]) == set(cohort[sample_id]["table"].obs["spot_id"])
    assert cohort["COHV1"]["spots"] is not merged["spots-COHV1"]  # the cohort's own samples are untouched
    assert set(get_transformation(cohort["COHV1"]["spots"], get_all=True)) == {"global", "microns"}


def test_expression_inner_equals_each_store(cohort: hs.Cohort) -> None:
    adata = cohort.expression(join="inner")
    visium_genes = cohort["COHV1"]["table"].var["gene_name"].tolist()
    common = set(visium_genes[ST_DROPPED_GENES:])
    assert set(adata.var_names) == common and adata.var["gene_name"].tolist() == adata.var_names.tolist()
    assert SLASHED_GENE[1] in adata.var_names  # a HEST name, not the store's sanitised var name
    assert adata.n_obs == sum(cohort[s]["table"].n_obs for s in cohort)
    for sample_id in cohort:
        own = cohort[sample_id]["table"]
        rows = (adata.obs["sample_id"] == sample_id).to_numpy()
        part = adata[rows]
        assert part.obs["barcode"].tolist() == own.obs["spot_id"].tolist()
        assert part.obs["patient"].unique().tolist() == [COHORT_SAMPLES[sample_id][1]]
        assert part.obs["technology"].unique().tolist() == [COHORT_SAMPLES[sample_id][0]]
        columns = pd.Index(own.var["gene_name"]).get_indexer(adata.var_names)
        np.testing.assert_array_equal(_counts(part.X), _counts(own.X)[:, columns])
        np.testing.assert_allclose(part.obsm["spatial"], own.obsm["spatial"])


def test_expression_outer_keeps_every_gene(cohort: hs.Cohort) -> None:
    adata = cohort.expression(join="outer")
    assert set(adata.var_names) == set(cohort["COHV1"]["table"].var["gene_name"])
    st = adata[(adata.obs["sample_id"] == "COHST").to_numpy()]
    absent = cohort["COHV1"]["table"].var["gene_name"].tolist()[:ST_DROPPED_GENES]
    assert _counts(st[:, absent].X).sum() == 0
    with pytest.raises(ValueError, match="join"):
        cohort.expression(join="left")


def test_splits_group_patients(cohort: hs.Cohort) -> None:
    folds = cohort.splits(2)
    assert len(folds) == 2 and folds == cohort.splits(2, seed=0)
    tests = [set(test) for _, test in folds]
    assert sorted(s for test in tests for s in test) == sorted(cohort)  # each sample in exactly one test fold
    for train, test in folds:
        assert set(train) | set(test) == set(cohort) and not set(train) & set(test)
        assert set(VISIUM) <= set(train) or set(VISIUM) <= set(test)  # one patient: one side
    with pytest.raises(ValueError, match="between 2 and the 2 patient groups"):
        cohort.splits(3)


def test_splits_sample_without_patient_is_its_own_group(cohort: hs.Cohort) -> None:
    table = cohort.table.copy()
    table.loc[VISIUM, "patient"] = pd.NA
    alone = hs.Cohort(table)
    assert len(set(alone.groups().values())) == 3
    folds = alone.splits(3, seed=5)
    assert sorted(s for _, test in folds for s in test) == sorted(cohort)
    assert all(len(test) == 1 for _, test in folds) and folds == alone.splits(3, seed=5)


def _items(dataset, indices):
    return [dataset[i] for i in indices]


def test_patch_dataset_items_and_spawned_workers(cohort: hs.Cohort) -> None:
    dataset = cohort.patch_dataset(patch_size_px=64, um_per_px=2.0)
    assert len(dataset.genes) == 50 and len(dataset) == sum(cohort.table["n_spots"])
    assert set(dataset.genes) <= set(cohort.expression().var_names)
    indices = [0, 1, len(dataset) // 2, len(dataset) - 1]
    items = _items(dataset, indices)
    for image, expression, sample_id, barcode in items:
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        assert expression.dtype == np.float32 and expression.shape == (50,)
        assert isinstance(sample_id, str) and isinstance(barcode, str) and sample_id in cohort
    assert {item[2] for item in items} == set(cohort)
    # the expression is the store's log1p counts of that spot, by HEST gene name
    image, expression, sample_id, barcode = items[-1]
    own = cohort[sample_id]["table"]
    row = own.obs_names.get_loc(barcode)
    columns = pd.Index(own.var["gene_name"]).get_indexer(dataset.genes)
    np.testing.assert_allclose(expression, np.log1p(_counts(own.X[row])[0, columns]), rtol=1e-6)
    assert not pickle.loads(pickle.dumps(dataset))._open  # stores are not pickled: each worker opens its own
    opened = [dataset.dataset(s) for s in cohort]
    assert all(d._cutter.cache is dataset._cache for d in opened)  # one memory budget for the whole cohort
    assert 0 < dataset._cache.nbytes <= dataset.cache_bytes
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        chunks = pool.starmap(_items, [(dataset, indices[:2]), (dataset, indices[2:])])
    for (image, expression, sample_id, barcode), got in zip(items, chunks[0] + chunks[1], strict=True):
        np.testing.assert_array_equal(got[0], image)
        np.testing.assert_array_equal(got[1], expression)
        assert got[2:] == (sample_id, barcode)


def test_patch_dataset_given_genes(cohort: hs.Cohort) -> None:
    dataset = cohort.patch_dataset(genes=[SLASHED_GENE[1]], patch_size_px=32, um_per_px=4.0, log1p=False)
    image, expression, _, _ = dataset[len(dataset) - 1]
    assert image.shape == (32, 32, 3) and expression.shape == (1,)
    assert set(dataset.sample_ids[dataset.items_of(["COHST"])]) == {"COHST"}
    dropped = cohort["COHV1"]["table"].var["gene_name"].iloc[0]
    with pytest.raises(KeyError, match=f"sample COHST has no gene {dropped}"):
        cohort.patch_dataset(genes=[dropped])


def test_cohort_command(cohort_dir: Path) -> None:
    import json

    from click.testing import CliRunner

    from hest_spatialdata.cli import main

    runner = CliRunner()
    shown = runner.invoke(main, ["cohort", str(cohort_dir)])
    assert shown.exit_code == 0, shown.output
    assert all(s in shown.output for s in COHORT_SAMPLES) and "PATIENT_A" in shown.output
    glob = str(cohort_dir / "COH*.zarr")
    as_json = runner.invoke(main, ["cohort", glob, "--technology", "Visium", "--format", "json"])
    records = json.loads(as_json.output)
    assert [r["sample_id"] for r in records] == VISIUM and {r["patient"] for r in records} == {"PATIENT_A"}
    as_csv = runner.invoke(main, ["cohort", str(cohort_dir / "COHST.zarr"), "--format", "csv"])
    assert as_csv.output.splitlines()[1].startswith("COHST,Brain,Spatial Transcriptomics,Mus musculus")
    missing = runner.invoke(main, ["cohort", str(cohort_dir / "nope")])
    assert missing.exit_code == 1 and "no such folder of stores" in missing.output


def test_napari_browser_lists_local_stores(cohort_dir: Path) -> None:
    from hest_spatialdata.napari import _catalog

    stores = _catalog.store_catalog(cohort_dir)
    assert sorted(stores.index) == sorted(COHORT_SAMPLES) and stores["local"].all()
    assert stores.loc["COHST", "technology"] == "Spatial Transcriptomics"
    assert stores.loc["COHV1", "store"] == str(cohort_dir / "COHV1.zarr")
    visium = _catalog.filter_catalog(_catalog.merge_catalogs(stores, None), technology="Visium")
    assert list(visium.index) == VISIUM


def test_expression_carries_each_sample_library(cohort: hs.Cohort) -> None:
    pytest.importorskip("spatialdata_io")
    adata = cohort.expression(images=True)
    assert sorted(adata.uns["spatial"]) == sorted(cohort)
    for sample_id in cohort:
        library = adata.uns["spatial"][sample_id]
        assert {"hires", "lowres"} <= set(library["images"]) and library["scalefactors"]["tissue_hires_scalef"] > 0
    st = adata.uns["spatial"]["COHST"]["scalefactors"]
    visium = adata.uns["spatial"]["COHV1"]["scalefactors"]
    assert st["spot_diameter_fullres"] > visium["spot_diameter_fullres"]  # ST spots are 100 µm, Visium 55 µm


def test_merged_sample_works_with_squidpy(cohort: hs.Cohort) -> None:
    sq = pytest.importorskip("squidpy")
    table = cohort.to_spatialdata()["table"]
    one = table[(table.obs["sample_id"] == "COHV2").to_numpy()].copy()
    sq.gr.spatial_neighbors(one, coord_type="generic", n_neighs=6)
    assert one.obsp["spatial_connectivities"].shape == (one.n_obs, one.n_obs)
    np.testing.assert_allclose(one.obsm["spatial"], cohort["COHV2"]["table"].obsm["spatial"])
