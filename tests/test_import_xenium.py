"""Importing a raw Xenium bundle: every element against an independent reading of the bundle's files.

The bundle (hest_spatialdata.example.xenium_bundle) is the real mouse-brain run's cells, matrix and manifest with
transcripts and boundaries built from the real counts, a post-Xenium H&E and a rotated, scaled, shifted alignment.
The expectations are computed here with pyarrow/pandas, h5py and NumPy from the files themselves.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tifffile

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.example.xenium_bundle import XeniumBundle, write_xenium_bundle
from hest_spatialdata.tenx.xenium import XeniumRun, read_xenium

MORPHOLOGY_UM = 0.2125


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> XeniumBundle:
    """The Xenium bundle with its H&E (read-only: link it elsewhere before changing a file)."""
    return write_xenium_bundle(tmp_path_factory.mktemp("xenium_bundle") / "outs")


@pytest.fixture(scope="module")
def run(bundle: XeniumBundle) -> XeniumRun:
    return read_xenium(bundle.path, sample_id="XEN1", slide_shape=_slide_shape(bundle.image))


def _slide_shape(image: Path) -> tuple[int, int]:
    with tifffile.TiffFile(image) as tif:
        return tif.pages[0].shape[:2]


def _to_he(bundle: XeniumBundle, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
    """H&E px of Xenium µm: the inverse of the matrix (H&E px -> morphology px) applied to µm / 0.2125."""
    morph = np.vstack([np.asarray(x_um, float) / MORPHOLOGY_UM, np.asarray(y_um, float) / MORPHOLOGY_UM,
                       np.ones(len(x_um))])  # fmt: skip
    return (np.linalg.inv(bundle.matrix) @ morph)[:2].T


def _transcripts(bundle: XeniumBundle) -> pd.DataFrame:
    return pq.read_table(bundle.path / "transcripts.parquet").to_pandas()


def test_pixel_size_is_the_alignment_scale(run: XeniumRun, bundle: XeniumBundle) -> None:
    scale = math.hypot(bundle.matrix[0, 1], bundle.matrix[1, 1])  # |M @ (0, 1, 0)|: one H&E px along y
    assert run.pixel_size_um == pytest.approx(MORPHOLOGY_UM * scale, rel=1e-12)
    assert run.pixel_size_um == pytest.approx(bundle.he_pixel_size_um, rel=1e-9)


def test_metadata_as_hest_writes_it(run: XeniumRun, bundle: XeniumBundle) -> None:
    import json

    manifest = json.loads((bundle.path / "experiment.xenium").read_text())
    assert {k: run.metadata[k] for k in manifest} == manifest  # experiment.xenium merged in whole
    assert run.metadata["spot_diameter"] == run.metadata["inter_spot_dist"] == 100.0
    assert run.metadata["cells_under_tissue"] == len(pd.read_parquet(bundle.path / "cells.parquet"))
    assert run.metadata["adata_nb_col"] == run.st.n_vars


def test_transcripts_on_the_he(run: XeniumRun, bundle: XeniumBundle) -> None:
    source = _transcripts(bundle)
    points = run.elements["transcripts"].compute()
    assert len(points) == len(source)
    got = points.set_index("transcript_id").loc[source["transcript_id"]]
    np.testing.assert_allclose(got[["x", "y"]].to_numpy(), _to_he(bundle, source["x_location"], source["y_location"]),
                               rtol=0, atol=1e-6)  # fmt: skip
    names = source["feature_name"].map(bytes.decode)
    assert (got["feature_name"].astype(str).to_numpy() == names.to_numpy()).all()
    ids = np.where(source["cell_id"] < 0, "UNASSIGNED", source["cell_id"].astype(str))
    assert (got["cell_id"].to_numpy() == ids).all()
    np.testing.assert_array_equal(got["qv"].to_numpy(), source["qv"].to_numpy())
    np.testing.assert_array_equal(got["overlaps_nucleus"].to_numpy(), source["overlaps_nucleus"].to_numpy())
    assert isinstance(points["feature_name"].dtype, pd.CategoricalDtype)
    # a partition per row group (not one per file, spatialdata-io's frame): memory bounded by the file's row groups
    groups = pq.ParquetFile(bundle.path / "transcripts.parquet").metadata.num_row_groups
    assert groups > 1 and run.elements["transcripts"].npartitions == groups


@pytest.mark.parametrize(("element", "file"), [("xenium_cells", "cell_boundaries"),
                                               ("xenium_nuclei", "nucleus_boundaries")])  # fmt: skip
def test_boundaries_warped(run: XeniumRun, bundle: XeniumBundle, element: str, file: str) -> None:
    import shapely

    source = pd.read_parquet(bundle.path / f"{file}.parquet")
    shapes = run.elements[element]
    ids = source["cell_id"].astype(str).unique()
    assert list(shapes.index) == list(ids)
    expected = _to_he(bundle, source["vertex_x"], source["vertex_y"])
    got = shapely.get_coordinates(shapes.geometry.to_numpy())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_cell_table_equals_the_feature_matrix(run: XeniumRun, bundle: XeniumBundle) -> None:
    with h5py.File(bundle.path / "cell_feature_matrix.h5", "r") as f:
        m = f["matrix"]
        import scipy.sparse as sp

        matrix = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=tuple(m["shape"][:]))
        names = m["features/name"][:].astype(str)
        genes = m["features/feature_type"][:].astype(str) == "Gene Expression"
        barcodes = m["barcodes"][:].astype(str)
    expected = pd.DataFrame(matrix.T.toarray()[:, genes], index=barcodes, columns=names[genes])
    table = run.elements["xenium_cell_table"]
    assert table.uns["spatialdata_attrs"]["region"] == "xenium_cells"
    got = pd.DataFrame(table.X.toarray(), index=table.obs_names, columns=table.var["gene_name"])
    assert set(got.index) == set(expected.index)
    pd.testing.assert_frame_equal(got.loc[expected.index, expected.columns], expected, check_dtype=False,
                                  check_names=False)  # fmt: skip
    cells = pd.read_parquet(bundle.path / "cells.parquet").set_index(pd.Index(barcodes))
    np.testing.assert_array_equal(table.obs.loc[barcodes, "control_probe_counts"], cells["control_probe_counts"])


def test_pseudo_spots_equal_an_independent_binning(run: XeniumRun, bundle: XeniumBundle) -> None:
    source = _transcripts(bundle)
    he = _to_he(bundle, source["x_location"], source["y_location"])
    side = 100.0 / run.pixel_size_um
    col = np.floor((he[:, 0] - he[:, 0].min()) / side).astype(int)
    row = np.floor((he[:, 1] - he[:, 1].min()) / side).astype(int)
    names = source["feature_name"].map(bytes.decode)
    expected = pd.crosstab(pd.Index([f"{r:03d}x{c:03d}" for r, c in zip(row, col, strict=True)]), names.to_numpy())
    st = run.st
    got = pd.DataFrame(st.X, index=st.obs_names, columns=st.var_names)
    assert st.X.dtype == np.uint16
    assert set(got.index) == set(expected.index) and set(got.columns) == set(expected.columns)
    pd.testing.assert_frame_equal(got.loc[expected.index, expected.columns], expected, check_dtype=False,
                                  check_names=False)  # fmt: skip
    assert list(st.var_names) == list(pd.unique(names))  # HEST: order of first appearance
    centre = st.obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    origin = he.min(axis=0)
    np.testing.assert_allclose(centre, origin + (st.obs[["array_col", "array_row"]].to_numpy() + 0.5) * side)


# --------------------------------------------------------------------------------------------- bad input


def _linked(bundle: XeniumBundle, dst: Path, *, without: str | None = None) -> Path:
    dst.mkdir()
    for path in bundle.path.iterdir():
        if path.name != without:
            (dst / path.name).symlink_to(path)
    return dst


@pytest.mark.parametrize("missing", ["transcripts.parquet", "experiment.xenium"])
def test_missing_bundle_file_is_named(bundle: XeniumBundle, tmp_path: Path, missing: str) -> None:
    folder = _linked(bundle, tmp_path / "outs", without=missing)
    with pytest.raises(HestInputError, match="not found") as info:
        read_xenium(folder, sample_id="XEN1", slide_shape=_slide_shape(bundle.image))
    assert info.value.path == folder / missing


def _without_column(bundle: XeniumBundle, folder: Path, column: str) -> None:
    table = pq.read_table(bundle.path / "transcripts.parquet")
    pq.write_table(table.drop_columns([column]), folder / "transcripts.parquet", row_group_size=50_000)


@pytest.mark.parametrize("dropped", ["feature_name", "x_location"])
def test_transcripts_without_a_position_or_name_are_named(bundle: XeniumBundle, tmp_path: Path, dropped: str) -> None:
    folder = _linked(bundle, tmp_path / "outs", without="transcripts.parquet")
    _without_column(bundle, folder, dropped)
    with pytest.raises(HestInputError, match=rf"transcripts lack the column\(s\) {dropped}") as info:
        read_xenium(folder, sample_id="XEN1", slide_shape=_slide_shape(bundle.image))
    assert info.value.path == folder / "transcripts.parquet"


def test_transcripts_without_cell_ids_give_no_cell_table_and_say_so(bundle: XeniumBundle, tmp_path: Path) -> None:
    folder = _linked(bundle, tmp_path / "outs", without="transcripts.parquet")
    _without_column(bundle, folder, "cell_id")
    with pytest.warns(UserWarning, match="XEN1 .*transcripts.parquet.*no cell_id column; xenium_cell_table not"):
        run = read_xenium(folder, sample_id="XEN1", slide_shape=_slide_shape(bundle.image))
    assert "xenium_cell_table" not in run.elements and "xenium_cells" in run.elements
    points = run.elements["transcripts"]
    assert "cell_id" not in points.columns and len(points) == len(_transcripts(bundle))
    assert int(run.st.X.sum()) == len(_transcripts(bundle))  # the pseudo-spots pool every transcript still


@pytest.mark.parametrize("text", ["not,a\nmatrix\n", "1,0,0\n0,1,0\n", "0,0,0\n0,0,0\n0,0,1\n", "\x00\xff\xfe"])
def test_unreadable_alignment_is_named(bundle: XeniumBundle, tmp_path: Path, text: str) -> None:
    folder = _linked(bundle, tmp_path / "outs", without="he_imagealignment.csv")
    (folder / "he_imagealignment.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(HestInputError) as info:
        read_xenium(folder, sample_id="XEN1", slide_shape=_slide_shape(bundle.image))
    assert info.value.path == folder / "he_imagealignment.csv"


def test_alignment_off_the_slide_is_named(bundle: XeniumBundle, tmp_path: Path) -> None:
    shifted = bundle.matrix.copy()
    shifted[:2, 2] -= 4000  # the H&E's origin 4000 morphology px further: the cells leave the slide
    csv = tmp_path / "shifted_imagealignment.csv"
    np.savetxt(csv, shifted, delimiter=",")
    with pytest.raises(HestInputError, match="outside the") as info:
        read_xenium(bundle.path, sample_id="XEN1", slide_shape=_slide_shape(bundle.image), alignment=csv)
    assert info.value.path == csv


def test_no_alignment_is_named(bundle: XeniumBundle, tmp_path: Path) -> None:
    folder = _linked(bundle, tmp_path / "outs", without="he_imagealignment.csv")
    with pytest.raises(HestInputError, match="--alignment"):
        read_xenium(folder, sample_id="XEN1", slide_shape=_slide_shape(bundle.image))


def test_keypoints_alignment_reads_as_hest(bundle: XeniumBundle, tmp_path: Path) -> None:
    """Xenium Explorer >= 2's keypoints give the affine through their first three points (HEST's rule)."""
    from hest_spatialdata.tenx.xenium_alignment import read_alignment

    he = np.array([[10.0, 20.0], [900.0, 40.0], [300.0, 800.0], [5.0, 5.0]])
    fixed = (bundle.matrix @ np.column_stack([he, np.ones(4)]).T)[:2].T
    fixed[3] += 50  # a fourth keypoint off the affine: HEST uses the first three only
    frame = pd.DataFrame({"fixedX": fixed[:, 0], "fixedY": fixed[:, 1], "alignmentX": he[:, 0],
                          "alignmentY": he[:, 1]})  # fmt: skip
    frame.to_csv(tmp_path / "keypoints.csv", index=False)
    np.testing.assert_allclose(read_alignment(tmp_path / "keypoints.csv"), bundle.matrix, rtol=1e-9, atol=1e-6)


def test_pooling_in_batches_equals_pooling_at_once() -> None:
    """Streamed pseudo-spots (several batches, features first seen in different batches) equal one pass."""
    from hest_spatialdata.tenx.pseudo_spots import PseudoSpotGrid, PseudoSpotPooler

    rng = np.random.default_rng(3)
    xy = rng.uniform([5.0, 7.0], [830.0, 610.0], (30_000, 2))
    codes = np.concatenate([rng.integers(10, 20, 10_000), rng.integers(0, 25, 20_000)])  # 0-9 appear later
    names = pd.Index([f"gene{i}" for i in range(30)])
    grid = PseudoSpotGrid.covering(xy.min(axis=0), xy.max(axis=0), 0.5)
    whole, streamed = PseudoSpotPooler(grid, len(names)), PseudoSpotPooler(grid, len(names))
    whole.add(xy, codes)
    for part in np.array_split(np.arange(len(codes)), 7):
        streamed.add(xy[part], codes[part])
    a, b = whole.adata(names), streamed.adata(names)
    assert list(a.var_names) == list(b.var_names) == list(names[pd.unique(codes)])
    assert list(a.obs_names) == list(b.obs_names)
    np.testing.assert_array_equal(a.X, b.X)
    assert a.X.sum() == len(codes)


# --------------------------------------------------------------------------------------------- the store


@pytest.fixture(scope="module")
def imported(bundle: XeniumBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle imported (the H&E found in the bundle, the alignment too) as XEN1.zarr."""
    from hest_spatialdata.tenx import import_10x

    out = tmp_path_factory.mktemp("imported")
    return import_10x(bundle.path, out, "XEN1", metadata={"organ": "Brain", "species": "Mus musculus", "patient": "M1"})


def test_store_is_valid_and_equals_the_run(imported: Path, run: XeniumRun, bundle: XeniumBundle) -> None:
    import json

    import spatialdata as sd

    import hest_spatialdata as hs

    report = hs.validate(imported, against=bundle.path)  # the structure, then every element against a re-import
    assert report.ok, str(report)
    store = sd.read_zarr(imported)
    for name in ("xenium_cells", "xenium_nuclei"):
        assert list(store[name].index) == list(run.elements[name].index)
    assert len(store["transcripts"]) == pq.ParquetFile(bundle.path / "transcripts.parquet").metadata.num_rows
    table = store["table"]
    np.testing.assert_array_equal(table.X, run.st.X)
    assert list(table.var["gene_name"]) == list(run.st.var_names)
    centres = np.column_stack([store["spots"].geometry.centroid.x, store["spots"].geometry.centroid.y])
    np.testing.assert_allclose(centres, run.st.obsm["spatial"])
    meta = json.loads(table.uns["hest_metadata"])
    assert meta["st_technology"] == "Xenium" and meta["pixel_size_um_estimated"] == pytest.approx(0.5)
    assert meta["spots_under_tissue"] == run.st.n_obs and meta["organ"] == "Brain"
    assert (meta["fullres_px_height"], meta["fullres_px_width"]) == _slide_shape(bundle.image)
    assert meta["analysis_sw_version"] == "xenium-1.0.2"  # experiment.xenium embedded
    assert store.attrs["hest"]["spots"]["side_um"] == pytest.approx(100.0)
    assert {"tissue", "patches"} <= set(store.shapes)


def test_cohort_of_imported_and_converted(imported: Path, xenium_store: Path) -> None:
    import anndata as ad

    import hest_spatialdata as hs

    cohort = hs.open_cohort([imported, xenium_store])
    assert set(cohort.table.index) == {"XEN1", "XENB"}
    adata = cohort.expression(join="inner")
    tables = {sample: ad.read_zarr(path / "tables" / "table") for sample, path in (("XEN1", imported),
                                                                                   ("XENB", xenium_store))}  # fmt: skip
    assert adata.n_obs == sum(t.n_obs for t in tables.values())
    for sample, table in tables.items():
        part = adata[adata.obs["sample_id"] == sample]
        genes = list(part.var_names)
        got = np.asarray(part.X.todense() if hasattr(part.X, "todense") else part.X)
        by_name = pd.DataFrame(np.asarray(table.X), columns=table.var["gene_name"]).loc[:, genes]
        np.testing.assert_array_equal(got, by_name.to_numpy())


def _cli(args: list[str]) -> tuple[int, str]:
    from click.testing import CliRunner

    from hest_spatialdata.cli import main

    result = CliRunner().invoke(main, ["import", *args])
    return result.exit_code, result.output


def test_cli_without_transcripts_writes_nothing(bundle: XeniumBundle, tmp_path: Path) -> None:
    folder = _linked(bundle, tmp_path / "outs", without="transcripts.parquet")
    code, output = _cli([str(folder), "-o", str(tmp_path / "stores"), "--id", "BAD"])
    assert code != 0 and "transcripts.parquet" in output and "not found" in output
    assert not (tmp_path / "stores" / "BAD.zarr").exists()


def test_cli_without_image_writes_nothing(bundle: XeniumBundle, tmp_path: Path) -> None:
    folder = _linked(bundle, tmp_path / "outs", without=bundle.image.name)
    code, output = _cli([str(folder), "-o", str(tmp_path / "stores"), "--id", "BAD"])
    assert code != 0 and "--image" in output
    assert not (tmp_path / "stores" / "BAD.zarr").exists()


def test_cli_alignment_off_the_slide_writes_nothing(bundle: XeniumBundle, tmp_path: Path) -> None:
    shifted = bundle.matrix.copy()
    shifted[:2, 2] += 3000
    csv = tmp_path / "shifted_imagealignment.csv"
    np.savetxt(csv, shifted, delimiter=",")
    code, output = _cli([str(bundle.path), "-o", str(tmp_path / "stores"), "--id", "BAD", "--alignment", str(csv)])
    assert code != 0 and "shifted_imagealignment.csv" in output and "outside the" in output
    assert not (tmp_path / "stores" / "BAD.zarr").exists()


def test_multinucleate_nuclei_join_under_their_cell_id(bundle: XeniumBundle) -> None:
    """XOA >= 2 nuclei (spatialdata-io: indexed by label, with a cell_id column) are indexed by the cell id."""
    import geopandas as gpd
    import shapely

    from hest_spatialdata._constants import Technology
    from hest_spatialdata.readers._context import SampleContext
    from hest_spatialdata.tenx.xenium import warped_boundaries
    from hest_spatialdata.tenx.xenium_alignment import XeniumToHE

    nuclei = gpd.GeoDataFrame(
        {"cell_id": ["aaaaaaab-1", "aaaaaaab-1", "aaaaaaac-1"]},
        geometry=[shapely.box(1600, 1600, 1603, 1603), shapely.box(1610, 1610, 1612, 1612),
                  shapely.box(1700, 1700, 1704, 1704)],
        index=pd.Index([1, 2, 3]),
    )  # fmt: skip
    warp = XeniumToHE(bundle.matrix, MORPHOLOGY_UM)
    ctx = SampleContext("XEN1", warp.pixel_size_um, Technology.XENIUM, _slide_shape(bundle.image))
    out = warped_boundaries(nuclei, warp, ctx, bundle.alignment)
    assert list(out.index) == ["aaaaaaab-1", "aaaaaaac-1"]
    assert out.geometry.iloc[0].geom_type == "MultiPolygon"
    area_px = (9 + 4) / warp.pixel_size_um**2  # a similarity: areas scale by 1 / pixel size squared
    assert out.geometry.iloc[0].area == pytest.approx(area_px, rel=1e-9)
