"""HEST-Benchmark on stores: embeddings written in sopa's layout, and the protocol against an independent computation.

Three converted samples of two patients (``hest_spatialdata.example.cohort``): COHV1 and COHV2 of PATIENT_A, COHST of
PATIENT_B, one dataset. The encoder is a real deterministic feature extractor (colour histograms and a fixed random
projection, numpy only), so everything runs without torch.

In the example every spot has a HEST patch; in the benchmark stores below COHV1's ``patches`` keep only the spots of
the left 70 % of the slide (as when HEST drops the patches of spots off tissue) and COHST has none (a store converted
without its patch file), so that the spots HEST-Benchmark uses differ from the table's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import hest_spatialdata as hs
from hest_spatialdata.benchmark import HistogramEncoder, benchmark_genes
from hest_spatialdata.source.layout import BENCH_TASKS

from .helpers import TEST_PIXEL_SIZE_UM

PATCH_PX, UM_PER_PX = 32, 4.0  # 128 µm patches of the 2 µm/px test slides: level 1, small and fast
NAME = "hist"
PATCHES_KEPT = 0.7  # COHV1's patches: the spots left of this quantile of x


def _trim_patches(cohort_dir: Path, out: Path) -> None:
    """Copy the cohort stores into ``out``; COHV1 keeps the patches of its left 70 %, COHST loses its patches."""
    import spatialdata as sd

    for store in cohort_dir.glob("*.zarr"):
        shutil.copytree(store, out / store.name)
    sdata = sd.read_zarr(out / "COHV1.zarr", selection=("shapes",))
    patches = sdata["patches"]
    x = patches.geometry.centroid.x
    kept = patches[x <= x.quantile(PATCHES_KEPT)]
    sdata.delete_element_from_disk("patches")
    sdata["patches"] = kept
    sdata.write_element("patches")
    sd.read_zarr(out / "COHST.zarr", selection=("shapes",)).delete_element_from_disk("patches")


@pytest.fixture(scope="module")
def stores(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the cohort stores (patches trimmed, see the module docstring) with the ``hist`` embeddings."""
    out = tmp_path_factory.mktemp("bench_stores")
    _trim_patches(cohort_dir, out)
    status = hs.embed(out, HistogramEncoder(), NAME, PATCH_PX, UM_PER_PX, batch_size=100, progress=False)
    assert status == dict.fromkeys(["COHST", "COHV1", "COHV2"], "written")
    every = hs.embed(out, HistogramEncoder(), f"{NAME}_all", PATCH_PX, UM_PER_PX, spots="all", progress=False)
    assert every == status
    return out


def _used_spots(sdata) -> list[str]:
    """The spots HEST-Benchmark uses, read independently: the patches' barcodes, else every spot of the table."""
    spot_ids = sdata["table"].obs["spot_id"].astype(str)
    if "patches" not in sdata.shapes:
        return spot_ids.tolist()
    return spot_ids[spot_ids.isin(sdata["patches"].index.astype(str))].tolist()


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x)


def _files(store: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Hash of every file of a store, except the root zarr.json and the folders ``skip``."""
    out = {}
    for path in sorted(p for p in store.rglob("*") if p.is_file()):
        rel = path.relative_to(store).as_posix()
        if rel != "zarr.json" and not rel.startswith(skip):
            out[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def test_embeddings_are_a_table_annotating_the_patch_shapes(stores: Path) -> None:
    import spatialdata as sd
    from spatialdata.models import get_table_keys
    from spatialdata.transformations import get_transformation

    from hest_spatialdata.benchmark._encoders import to_unit_floats
    from hest_spatialdata.loaders import PatchDataset

    for store in sorted(stores.glob("*.zarr")):
        sdata = sd.read_zarr(store)
        table, squares, spots = sdata[f"{NAME}_embeddings"], sdata[f"{NAME}_patches"], sdata["spots"]
        assert get_table_keys(table) == (f"{NAME}_patches", "region", "spot_id")
        assert table.obs_names.tolist() == table.obs["spot_id"].tolist() == squares.index.tolist()
        assert table.obs_names.tolist() == _used_spots(sdata)  # one embedding per patch spot, in table order
        assert table.uns["embedding_config"]["spots"] == ("all" if store.name == "COHST.zarr" else "patches")
        # the embeddings are the encoder's on the patches the single-store loader cuts at those spots
        patches = PatchDataset(store, PATCH_PX, UM_PER_PX, barcodes=table.obs_names)
        expected = HistogramEncoder()(to_unit_floats(np.stack([patches.image(i) for i in range(len(patches))])))
        np.testing.assert_allclose(table.X, expected, rtol=1e-5, atol=1e-6)
        assert table.X.dtype == np.float32 and table.X.shape == (len(_used_spots(sdata)), 64)
        # obsm["spatial"] = the spot centres; the shapes = 128 µm squares centred on them, in both systems
        centres = spots.loc[table.obs_names].geometry.get_coordinates().to_numpy()
        np.testing.assert_array_equal(table.obsm["spatial"], centres)
        np.testing.assert_allclose(squares.geometry.centroid.get_coordinates().to_numpy(), centres)
        side = PATCH_PX * UM_PER_PX / TEST_PIXEL_SIZE_UM
        bounds = squares.geometry.bounds.to_numpy()
        np.testing.assert_allclose(bounds[:, 2:] - bounds[:, :2], side)
        assert set(get_transformation(squares, get_all=True)) == {"global", "microns"}
        config = table.uns["embedding_config"]
        assert config["patch_width"] == PATCH_PX and config["um_per_px"] == UM_PER_PX and config["level"] == 1
        assert config["model_name"] == NAME and config["encoder_kind"] == "callable"
        assert "HistogramEncoder" in config["encoder_version"]


def test_embed_skips_replaces_and_leaves_the_rest_untouched(cohort_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(cohort_dir / "COHST.zarr", tmp_path / "COHST.zarr")
    store = tmp_path / "COHST.zarr"
    before, root_before = _files(store), json.loads((store / "zarr.json").read_text())
    (tmp_path / ".COHST.zarr.partial-999999999-deadbeef" / "shapes").mkdir(parents=True)  # left by a killed run
    assert hs.embed(store, "histogram", patch_size_px=PATCH_PX, um_per_px=UM_PER_PX, progress=False) == {
        "COHST": "written"
    }
    new = ("shapes/histogram_patches", "tables/histogram_embeddings")
    assert _files(store, skip=new) == before  # only the two new elements were added
    root = json.loads((store / "zarr.json").read_text())
    added = root["attributes"]["hest"].pop("added")  # the two elements are recorded as added after conversion
    assert added == {"shapes": ["histogram_patches"], "tables": ["histogram_embeddings"]}
    assert root["attributes"] == root_before["attributes"]
    written = _files(store)
    again = hs.embed(store, "histogram", patch_size_px=PATCH_PX, um_per_px=UM_PER_PX, progress=False)
    assert again == {"COHST": "skipped"} and _files(store) == written
    replaced = hs.embed(store, "histogram", patch_size_px=64, um_per_px=2.0, overwrite=True, progress=False)
    assert replaced == {"COHST": "written"} and _files(store, skip=new) == before
    import spatialdata as sd

    assert sd.read_zarr(store)["histogram_embeddings"].uns["embedding_config"]["patch_width"] == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["COHST.zarr"]  # no temporary or replaced element left


class _FailsOnSecondSample:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("encoder crashed")
        return np.asarray(batch).mean(axis=(2, 3))


def test_a_failing_encoder_leaves_the_next_store_as_it_was(cohort_dir: Path, tmp_path: Path) -> None:
    for sample_id in ("COHST", "COHV1"):
        shutil.copytree(cohort_dir / f"{sample_id}.zarr", tmp_path / f"{sample_id}.zarr")
    before = _files(tmp_path / "COHV1.zarr")
    with pytest.raises(RuntimeError, match="encoder crashed"):
        hs.embed(tmp_path, _FailsOnSecondSample(), "mean", PATCH_PX, UM_PER_PX, batch_size=10_000, progress=False)
    assert (tmp_path / "COHST.zarr" / "tables" / "mean_embeddings").is_dir()
    assert _files(tmp_path / "COHV1.zarr") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["COHST.zarr", "COHV1.zarr"]
    with pytest.raises(ValueError, match="needs a name"):
        hs.embed(tmp_path, _FailsOnSecondSample())
    with pytest.raises(ValueError, match="spots must be one of"):
        hs.embed(tmp_path, "histogram", spots="tissue")


def test_torch_module_encoder(cohort_dir: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed (the bench extra); CI runs without it")
    import spatialdata as sd

    shutil.copytree(cohort_dir / "COHST.zarr", tmp_path / "COHST.zarr")
    module = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    hs.embed(tmp_path, module, patch_size_px=PATCH_PX, um_per_px=UM_PER_PX, progress=False)
    table = sd.read_zarr(tmp_path / "COHST.zarr")["Sequential_embeddings"]
    assert table.shape[1] == 12 and table.uns["embedding_config"]["encoder_kind"] == "torch"
    assert np.all((table.X >= 0) & (table.X <= 1))


# ------------------------------------------------------------------------------ the protocol, computed independently


def _hest_get_k_genes(adatas, k: int = 50) -> list[str]:
    """HEST's get_k_genes(criteria="var"), as its code reads, on dense frames."""
    import anndata as ad
    import scanpy as sc

    common = None
    for adata in adatas:
        mine = adata.copy()
        sc.pp.filter_genes(mine, min_cells=np.ceil(0.10 * len(mine.obs)))
        current = np.array(mine.to_df().columns)
        common = current if common is None else np.intersect1d(common, current)
    common = [g for g in common if "BLANK" not in g and "Control" not in g]
    stacked = pd.concat([adata.to_df()[common] for adata in adatas])
    with warnings.catch_warnings():  # the samples' barcodes repeat across samples, as in HEST's own stacking
        warnings.simplefilter("ignore", UserWarning)
        st = ad.AnnData(stacked.astype(np.float32))
        sc.pp.filter_genes(st, min_cells=0)
    sc.pp.log1p(st)
    sc.pp.highly_variable_genes(st, n_top_genes=k)
    return st.var_names[st.var["highly_variable"]][:k].tolist()


def _by_hest_name(table):
    import anndata as ad

    return ad.AnnData(_dense(table.X), obs=pd.DataFrame(index=table.obs["spot_id"].astype(str).to_numpy()),
                      var=pd.DataFrame(index=table.var["gene_name"].astype(str).to_numpy()))  # fmt: skip


def test_benchmark_equals_scanpy_and_sklearn(stores: Path, caplog: pytest.LogCaptureFixture) -> None:
    import spatialdata as sd
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    result = hs.benchmark(stores, embeddings=NAME)
    assert "sample COHST has no 'patches' shapes" in caplog.text  # falls back to all its spots, and says so
    assert result.spots == {"COHST": "all", "COHV1": "patches", "COHV2": "patches"}
    samples = {s: sd.read_zarr(stores / f"{s}.zarr") for s in ("COHST", "COHV1", "COHV2")}
    counts = {s: _by_hest_name(sdata["table"]) for s, sdata in samples.items()}
    # HEST's get_k_genes runs on each sample's whole st h5ad (get_k_genes_from_df): every spot of the table
    genes = _hest_get_k_genes(list(counts.values()))
    assert result.genes == genes and len(genes) == 50
    # (dataset, patient) groups: PATIENT_A's two samples, then PATIENT_B's one
    assert result.folds == [(["COHST"], ["COHV1", "COHV2"]), (["COHV1", "COHV2"], ["COHST"])]
    # embeddings and targets: the spots of HEST's patch file (HEST's load_adata(barcodes=the patches' barcodes))
    used = {s: _used_spots(sdata) for s, sdata in samples.items()}
    assert len(used["COHV1"]) < 0.75 * samples["COHV1"]["table"].n_obs and len(used["COHV2"]) == 1554
    x = {s: sdata[f"{NAME}_all_embeddings"][used[s]].X for s, sdata in samples.items()}
    y = {s: np.log1p(counts[s][used[s], genes].X.astype(np.float64)) for s in x}
    for fold, (train, test) in enumerate(result.folds):
        x_train, x_test = np.vstack([x[s] for s in train]), np.vstack([x[s] for s in test])
        y_train, y_test = np.vstack([y[s] for s in train]), np.vstack([y[s] for s in test])
        scaler = StandardScaler().fit(x_train)
        pca = PCA(n_components=min(256, *x_train.shape), random_state=1).fit(scaler.transform(x_train))
        z_train = pca.transform(scaler.transform(x_train)).astype(np.float32)
        z_test = pca.transform(scaler.transform(x_test)).astype(np.float32)
        ridge = Ridge(alpha=100 / (z_train.shape[1] * 50), solver="lsqr", fit_intercept=False, random_state=1)
        predicted = ridge.fit(z_train, y_train).predict(z_test)
        r = [np.corrcoef(y_test[:, g], predicted[:, g])[0, 1] for g in range(50)]
        np.testing.assert_allclose(result.per_gene[f"fold{fold}"].to_numpy(), r, rtol=1e-5, atol=1e-6)
        assert result.n_spots[fold] == (len(x_train), len(x_test))
    fold_means = result.per_gene.mean(axis=0).to_numpy()
    assert result.pearson_mean == pytest.approx(fold_means.mean()) and result.pearson_std == pytest.approx(
        fold_means.std()
    )
    assert 0.02 < result.pearson_mean < 0.5  # colour histograms carry some signal, far from a foundation model
    # embeddings of every spot, benchmarked on the patch spots: the same; on all of them: more spots, another score
    on_patches = hs.benchmark(stores, embeddings=f"{NAME}_all", genes=genes)
    np.testing.assert_allclose(on_patches.per_gene.to_numpy(), result.per_gene.to_numpy(), rtol=1e-5, atol=1e-6)
    everything = hs.benchmark(stores, embeddings=f"{NAME}_all", genes=genes, spots="all")
    assert everything.spots == dict.fromkeys(["COHST", "COHV1", "COHV2"], "all")
    assert everything.n_spots == [(1554, 3108), (3108, 1554)] and everything.pearson_mean != result.pearson_mean


def test_result_files_and_options(stores: Path, tmp_path: Path) -> None:
    result = hs.benchmark(hs.open_cohort(stores), embeddings=NAME, genes=["Gad1", "Penk"], seed=3)
    assert result.genes == ["Gad1", "Penk"] and list(result.per_gene.columns) == ["fold0", "fold1"]
    saved = json.loads(result.to_json(tmp_path / "r.json"))
    assert saved == json.loads((tmp_path / "r.json").read_text())
    assert saved["pearson_mean"] == pytest.approx(result.pearson_mean) and saved["genes"] == result.genes
    table = pd.read_csv(pd.io.common.StringIO(result.to_csv()), index_col="gene")
    np.testing.assert_allclose(table[["fold0", "fold1"]].to_numpy(), result.per_gene.to_numpy())
    given = hs.benchmark(stores, embeddings=NAME, genes=["Gad1", "Penk"], seed=3, folds=result.folds[::-1])
    np.testing.assert_array_equal(given.per_gene.to_numpy(), result.per_gene.to_numpy()[:, ::-1])
    with pytest.raises(ValueError, match="not in the cohort: TENX95"):
        hs.benchmark(stores, embeddings=NAME, genes=["Gad1"], folds=[(["COHST"], ["TENX95"])])
    with pytest.raises(ValueError, match="2 to 2 folds"):
        hs.benchmark(stores, embeddings=NAME, genes=["Gad1"], n_folds=3)
    with pytest.raises(KeyError, match="sample COHST has no embeddings 'nope'"):
        hs.benchmark(stores, embeddings="nope", genes=["Gad1"])
    with pytest.raises(KeyError, match="sample COHST has no gene NotAGene"):
        hs.benchmark(stores, embeddings=NAME, genes=["NotAGene"])
    with pytest.raises(ValueError, match="spots must be one of 'patches', 'all', got 'tissue'"):
        hs.benchmark(stores, embeddings=NAME, genes=["Gad1"], spots="tissue")


def test_gene_rule_drops_rare_genes_and_control_probes(cohort_dir: Path) -> None:
    from hest_spatialdata.storage._parts import read_spot_table

    tables = [read_spot_table(cohort_dir / f"{s}.zarr") for s in ("COHST", "COHV1", "COHV2")]
    chosen = benchmark_genes(tables)
    assert chosen == _hest_get_k_genes([_by_hest_name(t) for t in tables])
    top, rare = chosen[0], chosen[1]
    for table in tables:  # every sample renames `top` into a control probe name
        table.var["gene_name"] = table.var["gene_name"].replace({top: f"NegControlProbe_{top}"})
    rows = tables[0].obs_names[: int(0.95 * tables[0].n_obs)]
    column = list(tables[0].var["gene_name"]).index(rare)
    x = tables[0].X.tolil() if sp.issparse(tables[0].X) else tables[0].X.copy()
    x[tables[0].obs_names.get_indexer(rows), column] = 0  # `rare`: expressed in < 10 % of one sample's spots
    tables[0].X = sp.csr_matrix(x) if sp.issparse(tables[0].X) else x
    changed = benchmark_genes(tables)
    assert top not in changed and rare not in changed and f"NegControlProbe_{top}" not in changed
    assert changed == _hest_get_k_genes([_by_hest_name(t) for t in tables])


def test_bench_task_filter() -> None:
    from hest_spatialdata.source.filters import filter_catalog, normalise_filters, record_matches

    assert record_matches({"id": "TENX95"}, normalise_filters(bench_task="idc"))
    assert not record_matches({"id": "TENX96"}, normalise_filters(bench_task="IDC,SKCM"))
    catalog = pd.read_csv(Path(__file__).parent / "data" / "hest_metadata" / "HEST_v1_3_0.csv")
    assert set(filter_catalog(catalog, bench_task="ccRCC")["id"]) == set(BENCH_TASKS["ccRCC"])
    assert len(filter_catalog(catalog, bench_task="PRAD")) == 23  # MEND139-MEND162, one not in the catalog
    with pytest.raises(ValueError, match="unknown HEST-Benchmark task 'HCC'"):
        normalise_filters(bench_task="HCC")


def test_embed_and_benchmark_commands(cohort_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hest_spatialdata.cli import main

    for sample_id in ("COHST", "COHV1", "COHV2"):
        shutil.copytree(cohort_dir / f"{sample_id}.zarr", tmp_path / "stores" / f"{sample_id}.zarr")
    runner = CliRunner()
    args = ["--patch-size", str(PATCH_PX), "--um-per-px", str(UM_PER_PX), "--quiet"]
    done = runner.invoke(main, ["embed", str(tmp_path / "stores"), "--encoder", "histogram", *args])
    assert done.exit_code == 0, done.output
    assert done.output.count("written") == 3
    again = runner.invoke(main, ["embed", str(tmp_path / "stores" / "COH*.zarr"), "--encoder", "histogram", *args])
    assert again.output.count("skipped") == 3
    out = tmp_path / "results"
    ran = runner.invoke(main, ["benchmark", str(tmp_path / "stores"), "--embeddings", "histogram", "-o", str(out)])
    assert ran.exit_code == 0, ran.output
    saved = json.loads((out / "histogram_results.json").read_text())
    expected = hs.benchmark(tmp_path / "stores", embeddings="histogram")
    assert (
        saved["pearson_mean"] == pytest.approx(expected.pearson_mean) and f"{expected.pearson_mean:.4f}" in ran.output
    )
    assert json.loads((out / "histogram_genes.json").read_text())["genes"] == expected.genes
    assert len(pd.read_csv(out / "histogram_per_gene.csv")) == 50
    assert (out / "histogram_per_gene.png").read_bytes()[:4] == b"\x89PNG"
    missing = runner.invoke(main, ["benchmark", str(tmp_path / "stores"), "--embeddings", "nope", "-o", str(out)])
    assert missing.exit_code == 1 and "has no embeddings 'nope'" in missing.output
    unknown = runner.invoke(main, ["benchmark", str(tmp_path / "stores"), "--embeddings", "x", "-o", str(out),
                                   "--bench-task", "HCC"])  # fmt: skip
    assert unknown.exit_code == 2 and "unknown task(s) HCC" in unknown.output
    spots = runner.invoke(main, ["benchmark", str(tmp_path / "stores"), "--embeddings", "histogram", "-o", str(out),
                                 "--spots", "tissue"])  # fmt: skip
    assert spots.exit_code == 2 and "'tissue' is not one of 'patches', 'all'" in spots.output


def test_the_plot_takes_folds_of_equal_r(tmp_path):
    """Folds with the same r per gene (the same sample held out twice): their mean differs in the last bit."""
    import pandas as pd

    from hest_spatialdata.benchmark import BenchmarkResult

    r = [0.1665372240287077, 0.18331423716269618, 0.17502070987241175]
    per_gene = pd.DataFrame({f"fold{k}": r for k in range(3)}, index=["Acta2", "Cabp7", "Spp1"])
    mean = per_gene.to_numpy().mean(axis=1)
    assert (per_gene.max(axis=1).to_numpy() - mean < 0).any()  # the rounding that broke the plot
    folds = [(["A", "B"], ["C"]), (["A", "C"], ["B"]), (["B", "C"], ["A"])]
    result = BenchmarkResult(embeddings="histogram", genes=list(per_gene.index), folds=folds, per_gene=per_gene, seed=1)
    result.plot(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 1000
