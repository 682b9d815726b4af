"""``hest-to-sdata import`` on real Space Ranger outputs: each element compared with an independent reading of the
10x files (scipy / pandas / h5py / scanpy / tifffile), never with the importer's own code."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
import shapely

from .conftest import TENX_DATA

SECTION1 = TENX_DATA / "visium_section1" / "outs"


def _section1_positions() -> pd.DataFrame:
    """Space Ranger 1's positions list (no header), by pandas."""
    names = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    return pd.read_csv(SECTION1 / "spatial" / "tissue_positions_list.csv", header=None, names=names, index_col=0)


def _row_spacing_um_per_px(positions: pd.DataFrame) -> float:
    """µm per px from the median distance of horizontal neighbours (array_col two apart: 100 µm)."""
    frame = positions.sort_values(["array_row", "array_col"])
    same_row = frame["array_row"].diff() == 0
    steps = frame["array_col"].diff()[same_row]
    dist = np.hypot(frame["pxl_col_in_fullres"].diff(), frame["pxl_row_in_fullres"].diff())[same_row] / (steps / 2)
    return 100.0 / float(np.median(dist))


def test_visium_counts_and_genes_equal_the_matrix_market_files(section1_store: Path) -> None:
    import anndata as ad

    table = ad.read_zarr(section1_store / "tables" / "table")
    mex = SECTION1 / "raw_feature_bc_matrix"
    counts = sp.csr_matrix(scipy.io.mmread(mex / "matrix.mtx")).T.tocsr()  # genes x barcodes in the file
    barcodes = pd.read_csv(mex / "barcodes.tsv", header=None)[0].tolist()
    features = pd.read_csv(mex / "features.tsv", header=None, sep="\t", names=["id", "name", "type"])
    assert table.obs_names.tolist() == barcodes
    assert table.var["gene_name"].tolist() == features["name"].tolist()
    assert table.var["gene_ids"].tolist() == features["id"].tolist()
    assert (sp.csr_matrix(table.X) != counts).nnz == 0  # every count unchanged
    assert table.uns["spatialdata_attrs"]["region"] == "spots"
    assert json.loads(table.uns["hest_metadata"])["spots_under_tissue"] == len(barcodes)


def test_visium_spots_are_55_um_circles_at_the_real_positions(section1_store: Path) -> None:
    import geopandas as gpd

    spots = gpd.read_parquet(next((section1_store / "shapes" / "spots").glob("*.parquet")))
    positions = _section1_positions().loc[spots.index]
    assert np.array_equal(spots.geometry.x, positions["pxl_col_in_fullres"].to_numpy(float))
    assert np.array_equal(spots.geometry.y, positions["pxl_row_in_fullres"].to_numpy(float))
    hest = json.loads((section1_store / "zarr.json").read_text())["attributes"]["hest"]
    pixel_size = hest["pixel_size_um"]
    # HEST's rule: 100 µm between neighbours of a row; Space Ranger's spot_diameter_fullres is its 65 µm circle
    assert pixel_size == pytest.approx(_row_spacing_um_per_px(_section1_positions()), rel=0.005)
    diameter_fullres = json.loads((SECTION1 / "spatial" / "scalefactors_json.json").read_text())[
        "spot_diameter_fullres"
    ]
    assert pixel_size == pytest.approx(65.0 / diameter_fullres, rel=0.01)
    assert np.allclose(spots["radius"], 55.0 / 2 / pixel_size)
    assert hest["metadata"]["pixel_size_um_estimated"] == pixel_size


def test_visium_he_levels_are_the_tiffs_pixel_for_pixel(section1_store: Path, section1_he: Path) -> None:
    import tifffile
    import zarr

    group = zarr.open_group(section1_store / "images" / "he", mode="r")
    with tifffile.TiffFile(section1_he) as tif:
        levels = tif.series[0].levels
        assert len(list(group.array_keys())) == len(levels)
        for k, level in enumerate(levels):
            stored = group[f"s{k}"]
            assert stored.shape == (3, *level.shape[:2])
            if k >= 2:  # small levels: all of them
                assert np.array_equal(stored[:], level.asarray().transpose(2, 0, 1))
        source = levels[0].pages[0].asarray(out="memmap")  # decoded by tifffile into a temporary file
        for y, x in ((0, 0), (4096, 3072), (10_700, 10_200)):  # glass, tissue, the last partial chunks
            window = source[y : y + 1024, x : x + 1024]
            assert np.array_equal(group["s0"][:, y : y + 1024, x : x + 1024], window.transpose(2, 0, 1))


def test_visium_metadata_and_attrs_say_what_was_imported(section1_store: Path, section1_he: Path) -> None:
    import tifffile

    hest = json.loads((section1_store / "zarr.json").read_text())["attributes"]["hest"]
    height, width = tifffile.TiffFile(section1_he).series[0].shape[:2]
    meta = hest["metadata"]
    assert (meta["fullres_px_width"], meta["fullres_px_height"]) == (width, height)
    assert hest["slide_shape"] == [height, width]
    assert meta["st_technology"] == hest["technology"] == "Visium"
    assert (meta["organ"], meta["species"], meta["patient"], meta["id"]) == (
        "Brain",
        "Mus musculus",
        "mouse-1",
        "SECTION1",
    )
    assert (meta["spot_diameter"], meta["inter_spot_dist"]) == (55.0, 100.0)
    assert hest["imported"]["folder"] == str(SECTION1.resolve())
    assert hest["imported"]["image"] == str(section1_he.resolve())
    assert hest["elements"] == {"images": ["he"], "shapes": ["patches", "spots", "tissue"], "tables": ["table"]}


@pytest.mark.parametrize("radius_px", [3, 20])
def test_tissue_morphology_is_scipys_closing_then_opening(section1_store: Path, radius_px: int) -> None:
    """OpenCV's filters give scipy's binary closing then opening exactly, borders included, on the real H&E."""
    import cv2
    import zarr
    from scipy import ndimage
    from skimage import morphology

    from hest_spatialdata.tenx.tissue import close_then_open

    he = zarr.open_group(section1_store / "images" / "he", mode="r")
    levels = sorted(he.array_keys(), key=lambda name: int(name.lstrip("s")))  # s0, s1, ...
    rgb = np.moveaxis(np.asarray(he[levels[-2]]), 0, -1)  # a coarse level, (y, x, 3)
    tissue = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[..., 1] > 25
    framed = tissue.copy()
    framed[:, :7] = framed[-5:, :] = True  # tissue cut by the slide's edges: the border rule matters
    disc = morphology.disk(radius_px)
    for mask in (tissue, framed, np.ones_like(tissue)):
        expected = ndimage.binary_opening(ndimage.binary_closing(mask, disc), disc)
        np.testing.assert_array_equal(close_then_open(mask, disc), expected)
    assert 0.05 < ndimage.binary_opening(ndimage.binary_closing(tissue, disc), disc).mean() < 0.95  # tissue, glass


def test_visium_tissue_agrees_with_space_rangers_in_tissue(section1_store: Path) -> None:
    """The detected tissue holds the spots Space Ranger called in tissue, and not the others."""
    import geopandas as gpd

    tissue = gpd.read_parquet(next((section1_store / "shapes" / "tissue").glob("*.parquet")))
    positions = _section1_positions()
    inside = shapely.contains_xy(
        shapely.union_all(tissue.geometry.to_numpy()), positions["pxl_col_in_fullres"], positions["pxl_row_in_fullres"]
    )
    called = positions["in_tissue"].to_numpy() == 1
    assert inside[called].mean() >= 0.9 and inside[~called].mean() <= 0.1
    assert (tissue.geometry.geom_type == "Polygon").all()


def test_visium_patches_follow_hests_rule(section1_store: Path) -> None:
    import geopandas as gpd

    patches = gpd.read_parquet(next((section1_store / "shapes" / "patches").glob("*.parquet")))
    hest = json.loads((section1_store / "zarr.json").read_text())["attributes"]["hest"]
    side = 224 * 0.5 / hest["pixel_size_um"]
    positions = _section1_positions().loc[patches.index]
    centres = positions[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    corners = (centres - side // 2).astype(int)  # HESTData.dump_patches
    bounds = shapely.bounds(patches.geometry.to_numpy())
    assert np.array_equal(bounds[:, :2], corners)
    assert np.allclose(bounds[:, 2:] - bounds[:, :2], round(side))
    assert 0 < len(patches) <= (positions["in_tissue"] == 1).sum() + 5


def test_nuclei_are_the_geojsons_polygons(demo_visium_store: Path, demo_nuclei: Path) -> None:
    import geopandas as gpd
    import zarr

    nuclei = gpd.read_parquet(next((demo_visium_store / "shapes" / "nuclei").glob("*.parquet")))
    features = json.loads(demo_nuclei.read_text())
    polygons = [(f["properties"]["classification"]["name"], p) for f in features for p in f["geometry"]["coordinates"]]
    assert len(nuclei) == len(polygons)
    assert nuclei["class"].tolist() == [name for name, _ in polygons]
    assert np.allclose(np.asarray(nuclei.geometry.iloc[0].exterior.coords), np.asarray(polygons[0][1][0]))
    labels = zarr.open_group(demo_visium_store / "labels" / "nuclei_labels", mode="r")["s0"]
    x, y = (int(v) for v in nuclei.geometry.iloc[0].representative_point().coords[0])
    assert labels[y, x] == nuclei.index[0] + 1  # label = cell_id + 1


def test_validate_checks_an_imported_store_against_its_10x_folder(
    demo_visium_store: Path, demo_visium_run: tuple[Path, Path], tmp_path: Path
) -> None:
    import h5py

    import hest_spatialdata as hs

    outs, _ = demo_visium_run
    report = hs.validate(demo_visium_store, outs.parent)
    assert report.ok, report.failures
    names = [check.name for check in report.checks]
    assert {"table table: X", "shape spots: geometries", "image he: level 0 pixels = the H&E's"} <= set(names)
    assert {"shape nuclei: geometries", "shape tissue: geometries", "shape patches: geometries"} <= set(names)
    changed = tmp_path / "run" / "outs"
    shutil.copytree(outs, changed)
    with h5py.File(changed / "filtered_feature_bc_matrix.h5", "r+") as f:
        f["matrix/data"][0] += 1  # one count of one spot
    other = hs.validate(demo_visium_store, changed.parent)
    assert [check.name for check in other.failures] == ["table table: X"]
    assert other.failures[0].detail == "1 values differ"


def test_validate_names_the_barcode_without_a_position(section1_store: Path) -> None:
    import hest_spatialdata as hs

    # section2 is SpatialExperiment's copy of section1 with the first barcode's position dropped
    other = hs.validate(section1_store, TENX_DATA / "visium_section2")
    assert [check.name for check in other.failures] == ["source"]
    assert "AAACAACGAATAGTTC-1" in other.failures[0].detail and "tissue_positions_list.csv" in other.failures[0].detail


def test_an_h5_runs_counts_and_centres_equal_scanpys_read_visium(tmp_path: Path) -> None:
    """Space Ranger 1.0.0's filtered h5 (a real run with all 4,992 positions): the run as read for the import."""
    import h5py
    import scanpy as sc

    from hest_spatialdata.tenx._run import ImportRequest
    from hest_spatialdata.tenx.visium import read_run

    folder = TENX_DATA / "visium_scanpy_1.0.0"
    request = ImportRequest(path=folder, folder=folder, sample_id="SCANPY", image=tmp_path / "not-read.tif")
    run = read_run(request, (13_332, 13_332))  # the size the 2000-px hires image and its scale factor imply
    reference = sc.read_visium(folder)
    assert run.table.obs_names.tolist() == reference.obs_names.tolist()
    assert np.array_equal(run.centres, np.asarray(reference.obsm["spatial"], float))
    with h5py.File(folder / "filtered_feature_bc_matrix.h5") as f:
        m = f["matrix"]
        counts = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=tuple(m["shape"][:])).T
    assert (sp.csr_matrix(run.table.X) != counts.tocsr()).nnz == 0
    assert run.pixel_size_um == pytest.approx(65.0 / 89.42751063343188, rel=0.01)


def test_visium_hd_bins_pool_into_hests_128_um_squares(demo_visium_hd_run: tuple[Path, Path], tmp_path: Path) -> None:
    import anndata as ad
    import geopandas as gpd
    import h5py

    from hest_spatialdata.tenx import import_10x

    outs, he = demo_visium_hd_run
    store = import_10x(outs.parent, tmp_path, "HD", metadata={"organ": "Brain"})
    bins = outs / "binned_outputs" / "square_016um"
    with h5py.File(bins / "filtered_feature_bc_matrix.h5") as f:
        m = f["matrix"]
        counts = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=tuple(m["shape"][:])).T.tocsr()
        barcodes = m["barcodes"][:].astype(str)
    positions = pd.read_parquet(bins / "spatial" / "tissue_positions.parquet").set_index("barcode").loc[barcodes]
    table = ad.read_zarr(store / "tables" / "table")
    hest = json.loads((store / "zarr.json").read_text())["attributes"]["hest"]
    assert hest["pixel_size_um"] == pytest.approx(2.0)  # the run's true 2 µm/px, from the 16 µm bins' spacing
    assert table.X.sum() == pytest.approx(counts.sum())  # every count of the 16 µm bins in one square
    # each square sums the bins whose centre falls in it (HEST's grid from the smallest centre)
    x, y = positions["pxl_col_in_fullres"].to_numpy(), positions["pxl_row_in_fullres"].to_numpy()
    square_px, bin_px = 128 / 2.0, 16 / 2.0
    col = np.floor((x - x.min() + bin_px // 2) / square_px).astype(int)
    row = np.floor((y - y.min() + bin_px // 2) / square_px).astype(int)
    spots = gpd.read_parquet(next((store / "shapes" / "spots").glob("*.parquet")))
    centre = spots.geometry.centroid
    first = table.obs_names[0]
    a = (centre[first].x - x.min() - square_px // 2) / square_px
    b = (centre[first].y - y.min() - square_px // 2) / square_px
    members = (col == round(a)) & (row == round(b))
    assert np.allclose(np.asarray(table[first].X.todense()).ravel(), np.asarray(counts[members].sum(axis=0)).ravel())
    bounds = shapely.bounds(spots.geometry.to_numpy())
    assert np.allclose(bounds[:, 2] - bounds[:, 0], square_px)  # 128 µm squares
    assert all(len(name) == 9 and name[4] == "x" for name in table.obs_names)  # HEST's rrrrxcccc
    assert hest["metadata"]["spots_under_tissue"] == table.n_obs
    assert hs_validate_ok(store, outs.parent)


def hs_validate_ok(store: Path, folder: Path) -> bool:
    import hest_spatialdata as hs

    report = hs.validate(store, folder)
    assert report.ok, report.failures
    return True


def test_a_flat_tiff_gets_lazily_halved_levels(tmp_path: Path) -> None:
    import tifffile

    from hest_spatialdata.tenx._image import image_levels

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(2501, 3003, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "flat.tif", image, photometric="rgb", tile=(256, 256))
    levels = image_levels(tmp_path / "flat.tif", "FLAT")
    assert [level.shape[:2] for level in levels] == [(2501, 3003), (1250, 1501), (625, 750)]
    expected = image
    for level in levels[1:]:
        h, w = expected.shape[0] // 2, expected.shape[1] // 2
        blocks = expected[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).astype(np.uint16).sum(axis=(1, 3))
        expected = ((blocks + 2) // 4).astype(np.uint8)
        assert np.array_equal(level[0 : level.shape[0], 0 : level.shape[1]], expected)
        assert np.array_equal(level[100:900, 333:1200], expected[100:900, 333:1200])


def test_visium_circle_and_metadata_from_the_demo_run(demo_visium_run: tuple[Path, Path], tmp_path: Path) -> None:
    """The built run (real Visium v1 barcodes at 100 µm over real cells): its true pixel size is recovered."""
    import scanpy as sc

    from hest_spatialdata.tenx import import_10x

    outs, he = demo_visium_run
    store = import_10x(outs, tmp_path, "DEMO", image=he, elements=["spots", "table"])
    hest = json.loads((store / "zarr.json").read_text())["attributes"]["hest"]
    assert hest["pixel_size_um"] == pytest.approx(2.0, rel=0.002)
    reference = sc.read_visium(outs)
    import anndata as ad

    table = ad.read_zarr(store / "tables" / "table")
    assert table.obs_names.tolist() == reference.obs_names.tolist()
    assert (sp.csr_matrix(table.X) != sp.csr_matrix(reference.X)).nnz == 0
    assert math.isclose(hest["metadata"]["inter_spot_dist"], 100.0)


def test_an_ome_tiff_pyramid_keeps_its_own_levels(tmp_path: Path) -> None:
    import tifffile

    from hest_spatialdata.tenx._image import image_levels

    rng = np.random.default_rng(1)
    levels = [rng.integers(0, 256, size=(1500 // 2**k, 1300 // 2**k, 3), dtype=np.uint8) for k in range(3)]
    path = tmp_path / "he.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:  # OME-TIFF: the lower levels as SubIFDs
        tif.write(levels[0], subifds=2, tile=(256, 256), photometric="rgb", compression="zlib")
        for level in levels[1:]:
            tif.write(level, subfiletype=1, tile=(256, 256), photometric="rgb", compression="zlib")
    found = image_levels(path, "OME")
    assert [level.shape for level in found] == [level.shape for level in levels]
    for mine, expected in zip(found, levels, strict=True):
        assert np.array_equal(mine[0 : mine.shape[0], 0 : mine.shape[1]], expected)


def test_a_gzipped_matrix_market_run_reads_the_same(tmp_path: Path) -> None:
    """Space Ranger >= 3 gzips the MatrixMarket files; the uncompressed copy of the same run reads the same."""
    import gzip

    from hest_spatialdata.tenx._run import ImportRequest
    from hest_spatialdata.tenx.visium import read_run

    copy = tmp_path / "outs"
    shutil.copytree(SECTION1, copy)
    for path in (copy / "raw_feature_bc_matrix").iterdir():
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    shape = (11_757, 11_287)  # section1's lowres image scaled back by its factor
    runs = [
        read_run(ImportRequest(path=folder, folder=folder, sample_id="S", image=tmp_path / "x.tif"), shape)
        for folder in (SECTION1, copy)
    ]
    assert runs[0].table.obs_names.tolist() == runs[1].table.obs_names.tolist()
    assert (sp.csr_matrix(runs[0].table.X) != sp.csr_matrix(runs[1].table.X)).nnz == 0
    assert np.array_equal(runs[0].centres, runs[1].centres) and runs[0].pixel_size_um == runs[1].pixel_size_um


def test_the_space_ranger_metrics_go_into_the_metadata(demo_visium_run: tuple[Path, Path], tmp_path: Path) -> None:
    """metrics_summary.csv's row is copied in, as HEST does; here the real metrics HEST kept for TENX68."""
    from hest_spatialdata.tenx import import_10x

    from .helpers import REALDATA

    hest68 = json.loads((REALDATA / "hest_metadata" / "metadata_json" / "TENX68.json").read_text())
    metrics = {key: value for key, value in hest68.items() if " " in key}  # Space Ranger's columns have spaces
    outs, he = demo_visium_run
    copy = tmp_path / "run" / "outs"
    shutil.copytree(outs, copy)
    pd.DataFrame([metrics]).to_csv(copy / "metrics_summary.csv", index=False)
    store = import_10x(copy, tmp_path / "stores", "METRICS", image=he, elements=["spots"])
    meta = json.loads((store / "zarr.json").read_text())["attributes"]["hest"]["metadata"]
    assert {key: meta[key] for key in metrics} == metrics
    assert meta["spots_under_tissue"] != metrics["Number of Spots Under Tissue"]  # ours counts this run's spots
