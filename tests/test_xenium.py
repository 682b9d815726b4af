from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
import spatialdata as sd
from click.testing import CliRunner
from spatialdata.models import get_table_keys
from spatialdata.transformations import get_transformation

from hest_spatialdata.cli import main
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.example import (
    XENIUM_PSEUDO_SPOT_UM,
    write_xenium_sample,
    xenium_cell_ids,
    xenium_cells_in,
    xenium_mouse_brain,
    xenium_mouse_brain_features,
)
from hest_spatialdata.readers import transcripts
from hest_spatialdata.readers.sample import read_hest
from hest_spatialdata.readers.transcripts import feature_types
from hest_spatialdata.readers.xenium_seg import UNASSIGNED, cell_id_strings
from hest_spatialdata.source.metadata import read_metadata

from .helpers import XENIUM_TEST_PIXEL_SIZE_UM, XENIUM_TEST_SAMPLES, xy_scale

PS = XENIUM_TEST_PIXEL_SIZE_UM
XENIUM_ELEMENTS = ["xenium_cells", "xenium_nuclei", "transcripts", "xenium_cell_table"]
GENES = set(xenium_mouse_brain_features().names[xenium_mouse_brain_features().types == "Gene Expression"])


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seg(root: Path, sample_id: str, kind: str = "cell") -> gpd.GeoDataFrame:
    return gpd.read_parquet(root / "xenium_seg" / f"{sample_id}_xenium_{kind}_seg.parquet")


def _transcripts_path(root: Path, sample_id: str) -> Path:
    return root / "transcripts" / f"{sample_id}_transcripts.parquet"


def _transcripts(root: Path, sample_id: str, columns: list[str] | None = None) -> pd.DataFrame:
    df = pd.read_parquet(_transcripts_path(root, sample_id), columns=columns)
    for column in ("cell_id", "feature_name"):
        if column in df.columns:
            df[column] = [UNASSIGNED if v == -1 else _text(v) for v in df[column]]
    return df


def _copy_sample(src: Path, sample_id: str, dst: Path, *, skip: tuple[str, ...] = ()) -> Path:
    for path in src.rglob(f"{sample_id}*"):
        if not any(path.name.endswith(s) for s in skip):
            (dst / path.parent.relative_to(src)).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dst / path.relative_to(src))
    return dst


@pytest.fixture(scope="module")
def store(xenium_store: Path) -> sd.SpatialData:
    return sd.read_zarr(xenium_store)


# --------------------------------------------------------------------------------------------- cell ids


def test_cell_id_strings_normalise_every_stored_type() -> None:
    assert cell_id_strings(pa.array([1, 36602, -1, None], pa.int64())).to_pylist() == ["1", "36602", UNASSIGNED,
                                                                                        UNASSIGNED]  # fmt: skip
    assert cell_id_strings(pa.array([b"aagigajm-1", b"UNASSIGNED", None])).to_pylist() == ["aagigajm-1", UNASSIGNED,
                                                                                            UNASSIGNED]  # fmt: skip
    assert cell_id_strings(pd.Index(["aagigajm-1"], dtype=object)).to_pylist() == ["aagigajm-1"]
    assert cell_id_strings(pd.Series([3.0, np.nan])).to_pylist() == ["3", UNASSIGNED]
    assert cell_id_strings(pa.array([b"x", b"y"]).dictionary_encode()).to_pylist() == ["x", "y"]


def test_10x_style_cell_ids_and_control_features() -> None:
    assert list(xenium_cell_ids(np.array([1, 16, 0x8EFA]))) == ["aaaaaaab-1", "aaaaaaba-1", "aaaaiopk-1"]
    names = ["Acta2", "NegControlProbe_00074", "BLANK_0005", "NegControlCodeword_0500", "UnassignedCodeword_0001"]
    assert list(feature_types(names)) == ["Gene Expression", "Negative Control Probe", "Unassigned Codeword",
                                          "Negative Control Codeword", "Unassigned Codeword"]  # fmt: skip
    features = xenium_mouse_brain_features()
    assert (feature_types(features.names) == np.where(features.types == "Blank Codeword", "Unassigned Codeword",
                                                      features.types)).all()  # fmt: skip


# --------------------------------------------------------------------------------------------- the generator


def test_generated_sample_is_hest_xenium(xenium_root: Path) -> None:
    meta = read_metadata(xenium_root / "metadata" / "XENB.json")
    assert meta["st_technology"] == "Xenium" and meta["pixel_size_um_estimated"] == PS
    assert meta["spot_diameter"] is None and meta["inter_spot_dist"] is None
    assert meta["pixel_size"] == 0.2125 and meta["panel_name"] == "Xenium Mouse Brain GEX"  # experiment.xenium
    schema = pq.read_schema(_transcripts_path(xenium_root, "XENB"))
    assert schema.field("feature_name").type == pa.binary() and schema.field("cell_id").type == pa.binary()
    assert pq.read_schema(_transcripts_path(xenium_root, "XENI")).field("cell_id").type == pa.int64()
    assert pq.ParquetFile(_transcripts_path(xenium_root, "XENB")).metadata.num_row_groups > 3
    assert isinstance(_seg(xenium_root, "XENB").index[0], bytes)
    assert isinstance(_seg(xenium_root, "XENS").index[0], str) and _seg(xenium_root, "XENI").index.dtype == np.int64


def test_generated_st_is_hest_pseudo_visium_pooling(xenium_root: Path) -> None:
    adata = ad.read_h5ad(xenium_root / "st" / "XENB.h5ad")
    df = _transcripts(xenium_root, "XENB", ["feature_name", "he_x", "he_y"])
    side = XENIUM_PSEUDO_SPOT_UM / PS
    col = np.floor((df["he_x"] - df["he_x"].min()) / side).astype(int)
    row = np.floor((df["he_y"] - df["he_y"].min()) / side).astype(int)
    expected = pd.crosstab([row, col], df["feature_name"])
    expected.index = [f"{r:03d}x{c:03d}" for r, c in expected.index]
    assert adata.X.dtype == np.uint16 and isinstance(adata.X, np.ndarray)
    assert list(adata.var_names) == list(pd.unique(df["feature_name"]))  # HEST: order of first appearance
    got = pd.DataFrame(adata.X, index=adata.obs_names, columns=adata.var_names)
    pd.testing.assert_frame_equal(got.astype(np.int64), expected.loc[got.index, got.columns].astype(np.int64),
                                  check_names=False)  # fmt: skip
    assert set(got.index) == set(expected.index[expected.sum(axis=1) > 0])
    assert (adata.obs["n_counts"] == got.sum(axis=1)).all()
    assert adata.uns["spatial"]["ST"]["scalefactors"]["spot_diameter_fullres"] == pytest.approx(55 / PS)


# --------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("kind", ["cell", "nucleus"])
def test_boundaries_equal_source(store: sd.SpatialData, xenium_root: Path, kind: str) -> None:
    source = _seg(xenium_root, "XENB", kind)
    shapes = store.shapes[f"xenium_{'cells' if kind == 'cell' else 'nuclei'}"]
    assert list(shapes.index) == [_text(i) for i in source.index]
    assert shapely.equals_exact(shapes.geometry.to_numpy(), source.geometry.to_numpy(), tolerance=0).all()
    assert xy_scale(get_transformation(shapes, "microns")) == pytest.approx([PS, PS])
    areas = xenium_mouse_brain().cells.iloc[xenium_cells_in(XENIUM_TEST_SAMPLES["XENB"][1])][f"{kind}_area"]
    assert shapes.area.to_numpy() * PS**2 == pytest.approx(areas.to_numpy())


def test_spots_are_100um_squares(store: sd.SpatialData, xenium_root: Path) -> None:
    adata = ad.read_h5ad(xenium_root / "st" / "XENB.h5ad")
    spots = store.shapes["spots"]
    assert list(spots.index) == list(adata.obs_names)
    x0, y0, x1, y1 = shapely.bounds(spots.geometry.to_numpy()).T
    assert x1 - x0 == pytest.approx(np.full(len(spots), 100 / PS)) and y1 - y0 == pytest.approx(x1 - x0)
    assert spots.area.to_numpy() == pytest.approx((100 / PS) ** 2)
    assert np.column_stack([(x0 + x1) / 2, (y0 + y1) / 2]) == pytest.approx(adata.obsm["spatial"])
    assert np.array_equal(store.tables["table"].X, adata.X)


# --------------------------------------------------------------------------------------------- transcripts


def test_transcripts_in_memory_are_lazy_and_typed(xenium_root: Path) -> None:
    sdata = read_hest(xenium_root, "XENB", elements=["transcripts"])
    points = sdata.points["transcripts"]
    assert points.npartitions == pq.ParquetFile(_transcripts_path(xenium_root, "XENB")).metadata.num_row_groups
    assert points["feature_name"].cat.known
    features = {_text(v) for v in pq.read_table(_transcripts_path(xenium_root, "XENB"), columns=["feature_name"])
                .column(0).unique().to_pylist()}  # fmt: skip
    assert list(points["feature_name"].cat.categories) == sorted(features)
    assert points.attrs["spatialdata_attrs"] == {"feature_key": "feature_name", "instance_key": "cell_id"}
    assert set(points.columns) == {"x", "y", "feature_name", "cell_id", "transcript_id", "overlaps_nucleus", "qv",
                                   "z_location", "nucleus_distance"}  # fmt: skip


def test_transcripts_equal_source(store: sd.SpatialData, xenium_root: Path) -> None:
    got = store.points["transcripts"].compute().set_index("transcript_id").sort_index()
    src = _transcripts(xenium_root, "XENB").set_index("transcript_id").sort_index()
    assert len(got) == len(src)
    assert np.array_equal(got["x"].to_numpy(), src["he_x"].to_numpy())
    assert np.array_equal(got["y"].to_numpy(), src["he_y"].to_numpy())
    assert (got["feature_name"].astype(str).to_numpy() == src["feature_name"].to_numpy()).all()
    assert (got["cell_id"].astype(str).to_numpy() == src["cell_id"].to_numpy()).all()
    for column in ("qv", "overlaps_nucleus", "z_location", "nucleus_distance"):
        assert np.array_equal(got[column].to_numpy(), src[column].to_numpy())
    assert not any(c.startswith("b'") for c in got["feature_name"].astype(str).unique())
    assert xy_scale(get_transformation(store.points["transcripts"], "microns")) == pytest.approx([PS, PS])


# --------------------------------------------------------------------------------------------- cell table


def test_cell_table_equals_groupby_of_transcripts(store: sd.SpatialData, xenium_root: Path) -> None:
    table = store.tables["xenium_cell_table"]
    df = _transcripts(xenium_root, "XENB", ["cell_id", "feature_name", "qv"])
    counted = df[(df["qv"] >= 20) & (df["cell_id"] != UNASSIGNED) & df["feature_name"].isin(GENES)]
    expected = counted.groupby(["cell_id", "feature_name"]).size().unstack(fill_value=0)
    expected = expected.reindex(index=table.obs["cell_id"], columns=table.var["gene_name"], fill_value=0)
    assert table.X.dtype == np.int32 and hasattr(table.X, "tocsr")
    assert np.array_equal(table.X.toarray(), expected.to_numpy())
    assert list(table.obs_names) == list(store.shapes["xenium_cells"].index) == list(table.obs["cell_id"])
    region, region_key, instance_key = get_table_keys(table)
    assert (region, region_key, instance_key) == ("xenium_cells", "region", "cell_id")
    counting = table.uns["xenium_counting"]
    assert counting["n_transcripts"] == len(df) and counting["n_unassigned"] == (df["cell_id"] == UNASSIGNED).sum()
    assert counting["n_below_min_qv"] == (df["qv"] < 20).sum() and counting["n_without_boundary"] == 0


def test_cell_table_gives_back_the_real_10x_matrix(store: sd.SpatialData) -> None:
    table = store.tables["xenium_cell_table"]
    rows = xenium_cells_in(XENIUM_TEST_SAMPLES["XENB"][1])
    real = xenium_mouse_brain()
    genes = pd.Index(table.var["gene_name"])
    expected = real.counts[rows][:, real.genes.get_indexer(genes)].toarray()
    assert np.array_equal(table.X.toarray(), expected)
    cells = real.cells.iloc[rows]
    for column in ("transcript_counts", "control_probe_counts", "control_codeword_counts", "total_counts"):
        assert np.array_equal(table.obs[column].to_numpy(), cells[column].to_numpy()), column
    centroids = shapely.get_coordinates(shapely.centroid(store.shapes["xenium_cells"].geometry.to_numpy()))
    assert table.obsm["spatial"] == pytest.approx(centroids)


def test_cell_table_accumulates_over_batches(xenium_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = ["xenium_cells", "xenium_cell_table"]
    whole = read_hest(xenium_root, "XENI", elements=wanted).tables["xenium_cell_table"]
    monkeypatch.setattr(transcripts, "BATCH_ROWS", 3_001)
    batched = read_hest(xenium_root, "XENI", elements=wanted).tables["xenium_cell_table"]
    assert (whole.X != batched.X).nnz == 0
    pd.testing.assert_frame_equal(whole.obs, batched.obs)


@pytest.mark.parametrize("sample_id", list(XENIUM_TEST_SAMPLES))
def test_cell_ids_join_whatever_their_type(xenium_root: Path, sample_id: str) -> None:
    sdata = read_hest(xenium_root, sample_id, elements=XENIUM_ELEMENTS)
    real_ids = xenium_mouse_brain().cells["cell_id"].to_numpy()[xenium_cells_in(XENIUM_TEST_SAMPLES[sample_id][1])]
    expected = [str(i) for i in real_ids] if sample_id == "XENI" else list(xenium_cell_ids(real_ids))
    cells, nuclei = sdata.shapes["xenium_cells"], sdata.shapes["xenium_nuclei"]
    assert list(cells.index) == expected and list(nuclei.index) == expected
    table = sdata.tables["xenium_cell_table"]
    assert list(table.obs["cell_id"]) == expected
    assigned = set(sdata.points["transcripts"]["cell_id"].unique().compute()) - {UNASSIGNED}
    assert assigned <= set(expected) and len(assigned) > 0.9 * len(expected)
    joined, joined_table = sd.join_spatialelement_table(
        sdata=sdata, spatial_element_names="xenium_cells", table_name="xenium_cell_table", how="inner"
    )
    assert len(joined["xenium_cells"]) == joined_table.n_obs == len(expected)


# --------------------------------------------------------------------------------------------- spatialdata


def test_bounding_box_query_filters_transcripts_cells_and_table(store: sd.SpatialData) -> None:
    x0, y0, x1, y1 = 150.0, 200.0, 400.0, 420.0
    sub = sd.bounding_box_query(store, axes=("x", "y"), min_coordinate=[x0, y0], max_coordinate=[x1, y1],
                                target_coordinate_system="global", filter_table=True)  # fmt: skip
    points = sub.points["transcripts"].compute()
    everything = store.points["transcripts"].compute()
    inside = everything["x"].between(x0, x1) & everything["y"].between(y0, y1)
    assert len(points) == inside.sum() > 0
    assert points["x"].between(x0, x1).all() and points["y"].between(y0, y1).all()
    cells = sub.shapes["xenium_cells"]
    box = shapely.box(x0, y0, x1, y1)
    all_cells = store.shapes["xenium_cells"]
    assert 0 < len(cells) < len(all_cells)
    assert set(all_cells.index[all_cells.within(box)]) <= set(cells.index)
    assert cells.envelope.intersects(box).all()
    assert set(sub.tables["xenium_cell_table"].obs["cell_id"]) == set(cells.index)


def test_extent_in_both_coordinate_systems(store: sd.SpatialData, xenium_root: Path) -> None:
    src = _transcripts(xenium_root, "XENB", ["he_x", "he_y"])
    px = sd.get_extent(store.points["transcripts"], coordinate_system="global")
    um = sd.get_extent(store.points["transcripts"], coordinate_system="microns")
    assert px["x"] == pytest.approx((src["he_x"].min(), src["he_x"].max()))
    assert px["y"] == pytest.approx((src["he_y"].min(), src["he_y"].max()))
    assert um["x"] == pytest.approx(tuple(v * PS for v in px["x"]))
    whole_px, whole_um = (sd.get_extent(store, coordinate_system=cs) for cs in ("global", "microns"))
    assert whole_um["y"] == pytest.approx(tuple(v * PS for v in whole_px["y"]))


def test_elements_option_skips_transcripts(xenium_root: Path, tmp_path: Path) -> None:
    wanted = "he,spots,table,xenium_cells,xenium_nuclei,xenium_cell_table"
    result = CliRunner().invoke(main, ["convert", str(xenium_root), "-o", str(tmp_path), "--id", "XENS",
                                       "--elements", wanted, "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    sdata = sd.read_zarr(tmp_path / "XENS.zarr")
    assert not sdata.points and {"xenium_cells", "xenium_nuclei"} <= set(sdata.shapes)
    assert "xenium_cell_table" in sdata.tables


# --------------------------------------------------------------------------------------------- fallbacks


def test_geojson_fallback_keeps_geometry_but_no_ids(xenium_root: Path, tmp_path: Path) -> None:
    root = _copy_sample(xenium_root, "XENI", tmp_path, skip=("_seg.parquet",))
    with pytest.warns(UserWarning, match="no Xenium cell ids|carry no cell ids"):
        sdata = read_hest(root, "XENI", elements=XENIUM_ELEMENTS)
    cells = sdata.shapes["xenium_cells"]
    source = _seg(xenium_root, "XENI")
    assert list(cells.index) == [f"geojson-{i}" for i in range(len(source))]
    assert shapely.equals_exact(cells.geometry.to_numpy(), source.geometry.to_numpy(), tolerance=1e-9).all()
    assert "xenium_cell_table" not in sdata.tables and "transcripts" in sdata.points


def test_cells_without_boundary_are_reported_not_tabulated(xenium_root: Path, tmp_path: Path) -> None:
    root = _copy_sample(xenium_root, "XENI", tmp_path)
    path = root / "xenium_seg" / "XENI_xenium_cell_seg.parquet"
    cells = gpd.read_parquet(path)
    cells.iloc[5:].to_parquet(path)
    with pytest.warns(UserWarning, match="have no boundary"):
        table = read_hest(root, "XENI", elements=["xenium_cells", "xenium_cell_table"]).tables["xenium_cell_table"]
    assert list(table.obs["cell_id"]) == [str(i) for i in cells.index[5:]]
    df = _transcripts(root, "XENI", ["cell_id", "qv"])
    dropped = df["cell_id"].isin([str(i) for i in cells.index[:5]])
    assert table.uns["xenium_counting"]["n_without_boundary"] == dropped.sum() > 0
    assert table.uns["xenium_counting"]["n_cells_without_boundary"] == df.loc[dropped, "cell_id"].nunique()


# --------------------------------------------------------------------------------------------- bad input


def test_transcripts_off_the_slide(xenium_root: Path, tmp_path: Path) -> None:
    root = _copy_sample(xenium_root, "XENI", tmp_path)
    path = _transcripts_path(root, "XENI")
    table = pq.read_table(path)
    he_x = table.column("he_x").to_numpy().copy()
    he_x[7] = 1e6
    pq.write_table(table.set_column(table.schema.get_field_index("he_x"), "he_x", pa.array(he_x)), path)
    with pytest.raises(HestInputError, match="outside the") as err:
        read_hest(root, "XENI", elements=["transcripts"])
    assert "XENI" in str(err.value) and "XENI_transcripts.parquet" in str(err.value)


@pytest.mark.parametrize("name", ["transcripts/XENI_transcripts.parquet", "xenium_seg/XENI_xenium_cell_seg.parquet"])
def test_truncated_parquet(xenium_root: Path, tmp_path: Path, name: str) -> None:
    root = _copy_sample(xenium_root, "XENI", tmp_path / "hest")
    data = (root / name).read_bytes()
    (root / name).write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(HestInputError) as err:
            read_hest(root, "XENI", elements=XENIUM_ELEMENTS)
    assert "sample XENI" in str(err.value) and Path(name).name in str(err.value)
    result = CliRunner().invoke(main, ["convert", str(root), "-o", str(tmp_path / "out"), "--id", "XENI", "--quiet"])
    assert result.exit_code == 1 and not (tmp_path / "out" / "XENI.zarr").exists()


def test_pseudo_spots_pooled_at_58_um_are_drawn_and_recorded_at_58_um(tmp_path: Path) -> None:
    """HEST pooled TENX122 and NCBI784 at about 58 µm (HEST issue 122): the squares follow the grid, not 100 µm."""
    write_xenium_sample(
        tmp_path, "XEN58", pixel_size_um=XENIUM_TEST_PIXEL_SIZE_UM, crop_um=XENIUM_TEST_SAMPLES["XENI"][1],
        geojson=False, pseudo_spot_um=57.9,
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"sample XEN58: Xenium pseudo-spots are 57\.9 µm squares"):
        sdata = read_hest(tmp_path, "XEN58", elements=["spots", "table"])
    assert sdata.attrs["hest"]["spots"] == {
        "shape": "square", "side_um": pytest.approx(57.9), "side_from": "spacing of the centres",
        "nominal_side_um": 100.0,
    }  # fmt: skip
    side_px = 57.9 / XENIUM_TEST_PIXEL_SIZE_UM
    np.testing.assert_allclose(shapely.area(sdata["spots"].geometry), side_px**2)
    assert shapely.union_all(sdata["spots"].geometry).area == pytest.approx(len(sdata["spots"]) * side_px**2)
