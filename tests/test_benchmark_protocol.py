"""HEST-Benchmark's protocol variants, the provenance a result records, and HEST-1k's known duplicates in the folds.

The cohort is ``hest_spatialdata.example.cohort`` (COHV1 and COHV2 of PATIENT_A, COHST of PATIENT_B) embedded with the
built-in histogram encoder; the variants are checked against scikit-learn and scipy run by hand.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hest_spatialdata as hs
from hest_spatialdata.benchmark import PROTOCOLS, BenchmarkResult, HistogramEncoder, benchmark_folds
from hest_spatialdata.source.layout import DUPLICATE_SAMPLES

PATCH_PX, UM_PER_PX = 32, 4.0
NAME = "hist"
GENES = ["Gad1", "Penk", "Epha4", "Nrep", "Igfbp5", "Id2"]


@pytest.fixture(scope="module")
def stores(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protocol_stores")
    for store in cohort_dir.glob("*.zarr"):
        shutil.copytree(store, out / store.name)
    hs.embed(out, HistogramEncoder(), NAME, PATCH_PX, UM_PER_PX, batch_size=500, progress=False)
    return out


def _by_hand(stores: Path, genes: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each sample's embeddings and log1p targets at the embedded spots, read with spatialdata."""
    import spatialdata as sd

    out = {}
    for sample in ("COHST", "COHV1", "COHV2"):
        sdata = sd.read_zarr(stores / f"{sample}.zarr")
        emb, table = sdata[f"{NAME}_embeddings"], sdata["table"]
        names = table.var["gene_name"].astype(str).tolist()
        rows = pd.Index(table.obs["spot_id"].astype(str)).get_indexer(emb.obs_names)
        x = table.X[rows][:, [names.index(g) for g in genes]]
        out[sample] = (np.asarray(emb.X, dtype=np.float32), np.log1p(np.asarray(x.todense(), dtype=np.float64)))
    return out


def test_full_dimension_fixed_alpha_and_per_sample_pearson_equal_sklearn(stores: Path) -> None:
    from scipy.stats import pearsonr
    from sklearn.linear_model import Ridge

    data = _by_hand(stores, GENES)
    result = hs.benchmark(stores, NAME, genes=GENES, pca=None, alpha=0.5, pearson="per_sample")
    assert result.protocol["preset"] is None
    assert {k: result.protocol[k] for k in ("pca", "alpha", "pearson", "seed", "folds")} == {
        "pca": None, "alpha": 0.5, "pearson": "per_sample", "seed": 1, "folds": "one per group"}  # fmt: skip
    for k, (train, test) in enumerate(result.folds):
        x_train = np.vstack([data[s][0] for s in train])
        y_train = np.vstack([data[s][1] for s in train])
        ridge = Ridge(alpha=0.5, solver="lsqr", fit_intercept=False, max_iter=1000, random_state=1)
        ridge.fit(x_train, y_train)  # the full 64-d embedding, neither scaled nor reduced
        per_sample = {}
        for s in test:
            predicted = ridge.predict(data[s][0])
            per_sample[s] = [pearsonr(data[s][1][:, g], predicted[:, g])[0] for g in range(len(GENES))]
            np.testing.assert_allclose(result.per_sample[f"fold{k}/{s}"], per_sample[s], rtol=1e-6, atol=1e-9)
        expected = np.nanmean(np.array(list(per_sample.values())), axis=0)  # the samples' mean, per gene
        np.testing.assert_allclose(result.per_gene[f"fold{k}"], expected, rtol=1e-6, atol=1e-9)
    assert result.alphas == [0.5, 0.5]
    hest = hs.benchmark(stores, NAME, genes=GENES, **PROTOCOLS["paper-a13"])  # pooled: one r over the test spots
    assert hest.per_sample is None and not np.allclose(hest.per_gene["fold0"], result.per_gene["fold0"])
    assert hest.protocol["preset"] == "paper-a13" and hest.alphas == [100 / (64 * len(GENES))] * 2


def test_tuned_alpha_sees_only_the_training_samples() -> None:
    from sklearn.model_selection import GroupKFold

    from hest_spatialdata.benchmark._fit import alpha_candidates, fit_fold, pearson_per_gene, ridge

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(20, 4))
    x_train = rng.normal(size=(300, 20))
    y_train = x_train @ weights + rng.normal(scale=8.0, size=(300, 4))  # noisy: a strong ridge helps
    groups = np.repeat(["a", "b", "c", "d", "e", "f"], 50)
    chosen = []
    for seed in range(3):  # test sides of other sizes and values: the same alpha
        x_test = np.random.default_rng(seed + 10).normal(size=(40 + seed, 20))
        y_test = np.random.default_rng(seed + 20).normal(size=(40 + seed, 4))
        fit = fit_fold(x_train, y_train, x_test, y_test, 1, pca=8, alpha="tuned", train_groups=groups)
        chosen.append(fit.alpha)
    assert len(set(chosen)) == 1
    # by hand: scaler + PCA(8) on the training side, then each candidate on 5 group folds of it
    from hest_spatialdata.benchmark._fit import reduce_features

    train, _ = reduce_features(x_train, x_train[:2], 8, 1)
    candidates = alpha_candidates(8, 4)
    scores = [
        np.mean([np.nanmean(pearson_per_gene(y_train[b], ridge(a, 1).fit(train[f], y_train[f]).predict(train[b])))
                 for f, b in GroupKFold(n_splits=5).split(train, groups=groups)])
        for a in candidates
    ]  # fmt: skip
    assert chosen[0] == candidates[int(np.argmax(scores))] and chosen[0] > 1


def test_result_records_its_provenance_and_compares(stores: Path, tmp_path: Path) -> None:
    result = hs.benchmark(stores, NAME, genes=GENES)
    saved = json.loads(result.to_json(tmp_path / "a.json"))
    assert saved["protocol"]["preset"] == "hest" and saved["protocol"]["pca"] == 256
    assert saved["protocol"]["ridge"] == {"solver": "lsqr", "fit_intercept": False, "max_iter": 1000}
    assert saved["hest_spatialdata_version"] == hs.__version__ and saved["genes"] == GENES
    config = saved["embedding_config"]["COHV1"]
    assert config["encoder"] == NAME and config["patch_size_px"] == PATCH_PX and config["um_per_px"] == UM_PER_PX
    again = BenchmarkResult.from_json(tmp_path / "a.json")
    np.testing.assert_array_equal(again.per_gene.to_numpy(), result.per_gene.to_numpy())
    assert again.folds == result.folds and again.protocol == saved["protocol"] and again.comparable_with(result) == []
    assert again.differences(result) == {}
    tuned = hs.benchmark(stores, NAME, genes=GENES, **PROTOCOLS["tuned-alpha"])
    assert tuned.protocol["alpha_grid"][0] == 0.01 and len(tuned.alphas) == 2
    assert result.comparable_with(tuned) == ["protocol.alpha", "protocol.alpha_grid", "protocol.inner_folds",
                                             "protocol.preset"]  # fmt: skip
    fewer = hs.benchmark(stores, NAME, genes=GENES[:3], folds=result.folds[::-1])
    assert result.comparable_with(fewer) == ["folds", "genes", "protocol.folds"]
    other = BenchmarkResult.from_json(
        saved
        | {
            "embedding_config": {
                s: c | {"encoder": "uni", "encoder_version": "timm 1.0"} for s, c in saved["embedding_config"].items()
            }
        }
    )
    assert result.comparable_with(other) == []  # another encoder on the same patches: what a comparison is for
    assert "embeddings.COHST.encoder" in result.differences(other)
    bigger = BenchmarkResult.from_json(saved | {"embedding_config": {
        s: c | {"patch_size_px": 64} for s, c in saved["embedding_config"].items()}})  # fmt: skip
    assert result.comparable_with(bigger) == [f"patches.{s}.patch_size_px" for s in ("COHST", "COHV1", "COHV2")]
    with pytest.raises(ValueError, match="not a benchmark results file"):
        BenchmarkResult.from_json({"pearson_mean": 0.3})
    with pytest.raises(ValueError, match="pca must be a number of components"):
        hs.benchmark(stores, NAME, genes=GENES, pca=0)
    with pytest.raises(ValueError, match="alpha must be one of 'hest', 'tuned' or a number > 0, got 'cv'"):
        hs.benchmark(stores, NAME, genes=GENES, alpha="cv")
    with pytest.raises(ValueError, match="pearson must be one of 'pooled', 'per_sample'"):
        hs.benchmark(stores, NAME, genes=GENES, pearson="spots")


# ------------------------------------------------------------------------------------ known duplicates of HEST-1k


def _as_sample(source: Path, target: Path, sample_id: str, patient: str) -> None:
    """A copy of a store under another HEST-1k id and patient (what a store of that sample would say)."""
    shutil.copytree(source, target / f"{sample_id}.zarr")
    root = json.loads((target / f"{sample_id}.zarr" / "zarr.json").read_text())
    hest = root["attributes"]["hest"]
    hest["sample_id"] = sample_id
    hest["metadata"] |= {"id": sample_id, "patient": patient}
    (target / f"{sample_id}.zarr" / "zarr.json").write_text(json.dumps(root))


def test_duplicate_slides_stay_on_one_side_of_every_fold(stores: Path, tmp_path: Path) -> None:
    _as_sample(stores / "COHST.zarr", tmp_path, "MEND41", "P1")
    _as_sample(stores / "COHV1.zarr", tmp_path, "NCBI535", "P2")  # MEND41's slide, published on GEO
    _as_sample(stores / "COHV2.zarr", tmp_path, "COHV2", "P3")
    cohort = hs.open_cohort(tmp_path)
    with pytest.warns(UserWarning, match=r"samples MEND41 and NCBI535 are one slide .*mendeley.* kept on one side"):
        folds = benchmark_folds(cohort)
    assert folds == [(["COHV2"], ["MEND41", "NCBI535"]), (["MEND41", "NCBI535"], ["COHV2"])]  # 2 groups, not 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one member alone: no merge, no warning
        alone = benchmark_folds(hs.open_cohort([tmp_path / "MEND41.zarr", tmp_path / "COHV2.zarr"]))
    assert alone == [(["COHV2"], ["MEND41"]), (["MEND41"], ["COHV2"])]
    split = [(["MEND41", "COHV2"], ["NCBI535"]), (["NCBI535"], ["MEND41", "COHV2"])]
    with pytest.warns(UserWarning, match="folds 0, 1 train on one and test on another"):
        result = hs.benchmark(cohort, NAME, genes=GENES, folds=split)
    assert result.folds == split


def test_duplicate_table_matches_hest_catalog() -> None:
    """Each group is one image by HEST's own catalog (v1.3.0): the same size, spots and estimated pixel size; and
    every set of catalog rows sharing those figures is a group (TENX128/TENX155, shown by HEST issue 126, is the
    same section re-imaged: its figures differ)."""
    catalog = pd.read_csv(Path(__file__).parent / "data" / "hest_metadata" / "HEST_v1_3_0.csv").set_index("id")
    figures = ["fullres_px_width", "fullres_px_height", "spots_under_tissue", "pixel_size_um_estimated"]
    listed = {frozenset(g.ids) for g in DUPLICATE_SAMPLES}
    by_figures = {frozenset(ids) for ids in catalog.reset_index().groupby(figures)["id"].apply(list) if len(ids) > 1}
    assert listed - by_figures == {frozenset({"TENX128", "TENX155"})}
    assert by_figures <= listed
    assert all(g.source.startswith("https://") and g.evidence for g in DUPLICATE_SAMPLES)
    assert {"MEND41", "MEND45", "MEND47", "MEND51"} <= {s for g in DUPLICATE_SAMPLES for s in g.ids}


def test_benchmark_command_protocol_options_and_compare(stores: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hest_spatialdata.cli import main

    runner = CliRunner()
    (tmp_path / "genes.json").write_text(json.dumps({"genes": GENES}))
    run = ["benchmark", str(stores), "--embeddings", NAME, "--genes", str(tmp_path / "genes.json")]
    done = runner.invoke(main, [*run, "-o", str(tmp_path / "a"), "--protocol", "paper-a13", "--pearson", "per_sample"])
    assert done.exit_code == 0, done.output
    assert "(protocol pca None, alpha hest, pearson per_sample)" in done.output
    saved = json.loads((tmp_path / "a" / f"{NAME}_results.json").read_text())
    assert {k: saved["protocol"][k] for k in ("preset", "pca", "alpha", "pearson")} == {
        "preset": None, "pca": None, "alpha": "hest", "pearson": "per_sample"}  # fmt: skip
    expected = hs.benchmark(stores, NAME, genes=GENES, pca=None, pearson="per_sample")
    assert saved["pearson_mean"] == pytest.approx(expected.pearson_mean)
    a = str(tmp_path / "a" / f"{NAME}_results.json")
    again = runner.invoke(main, [*run, "-o", str(tmp_path / "b"), "--pca", "full", "--alpha", "0.5", "--compare", a])
    assert again.exit_code == 0, again.output
    assert "(protocol pca None, alpha 0.5, pearson pooled)" in again.output and "NOT comparable with" in again.output
    assert '✗ protocol.alpha: 0.5 | "hest"' in again.output and "✗ protocol.pearson" in again.output
    b = str(tmp_path / "b" / f"{NAME}_results.json")
    compared = runner.invoke(main, ["benchmark", "--compare", a, "--compare", b])
    assert compared.exit_code == 1 and "NOT comparable" in compared.output
    same = runner.invoke(main, ["benchmark", "--compare", a, "--compare", a])
    assert same.exit_code == 0 and f"comparable with {a}" in same.output
    for bad, message in ((["--pca", "0"], "neither a number of components"), (["--alpha", "cv"], "not 'hest'")):
        refused = runner.invoke(main, [*run, "-o", str(tmp_path / "c"), *bad])
        assert refused.exit_code == 2 and message in refused.output
    alone = runner.invoke(main, ["benchmark", "--compare", a])
    assert alone.exit_code == 2 and "two results JSONs" in alone.output


# ------------------------------------------------------------------------------------ LazySlide / wsidata


def test_embeddings_read_as_wsidata_features(stores: Path) -> None:
    """wsidata's layout (``attrs["tile_spec"][tile_key]``, shapes ``tile_key``, table ``feature_key``): the tile spec
    computed from the store describes the patch squares; with wsidata installed, it reads the features."""
    import spatialdata as sd

    from hest_spatialdata.benchmark import wsidata_tile_spec

    store = stores / "COHV1.zarr"
    spec = wsidata_tile_spec(store, NAME)
    sdata = sd.read_zarr(store, selection=("shapes", "tables"))
    squares = sdata[f"{NAME}_patches"].geometry.bounds
    base_side = spec["height"] * spec["base_downsample"]  # wsidata's base_height: the side at level 0
    np.testing.assert_allclose(squares["maxx"] - squares["minx"], base_side)
    config = sdata[f"{NAME}_embeddings"].uns["embedding_config"]
    assert spec["mpp"] == UM_PER_PX and spec["ops_level"] == config["level"] == 1
    assert spec["height"] * spec["ops_downsample"] == pytest.approx(PATCH_PX * UM_PER_PX / config["level_um_per_px"])
    with pytest.raises(KeyError, match="no embeddings 'nope'"):
        wsidata_tile_spec(store, "nope")
    wsidata = pytest.importorskip("wsidata", reason="wsidata is not installed (pip install wsidata)")
    spec_type = wsidata.TileSpec(**spec)  # wsidata takes the dict as it is
    assert spec_type.base_height == int(base_side)
    wsi = wsidata.open_wsi(sd.read_zarr(store), image_key="he")
    wsi.attrs["tile_spec"] = {f"{NAME}_patches": spec}
    features = wsi.fetch.features_anndata(f"{NAME}_embeddings", tile_key=f"{NAME}_patches")
    table = sdata[f"{NAME}_embeddings"]
    np.testing.assert_array_equal(features.X, table.X)
    assert features.obs_names.tolist() == table.obs_names.tolist()
    np.testing.assert_allclose(features.obsm["spatial"], squares[["minx", "miny"]].to_numpy())
    assert features.uns["tile_spec"]["mpp"] == UM_PER_PX
    region = wsi.reader.get_region(0, 0, 16, 16, level=0)
    assert region.shape == (16, 16, 3) and region.dtype == np.uint8  # the H&E pyramid, read through wsidata
