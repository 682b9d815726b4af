from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import spatialdata as sd
from spatialdata.models import PointsModel
from spatialdata.transformations import Identity, get_transformation

from hest_spatialdata._constants import Technology
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID, example_data_path
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.readers.cellvit import read_cellvit
from hest_spatialdata.readers.sample import read_hest
from hest_spatialdata.storage.store import convert_sample

from .helpers import TEST_PIXEL_SIZE_UM, xy_scale

SID = EXAMPLE_SAMPLE_ID
#: Real nuclei (cellseg_gsontools, MIT) in HEST's CellViT GeoJSON layout, shipped with the example data.
REAL_GEOJSON = example_data_path("gland_cells_hest_cellvit_seg.geojson.gz")


@pytest.fixture(scope="module")
def parquet(hest_root):
    return gpd.read_parquet(hest_root / "cellvit_seg" / f"{SID}_cellvit_seg.parquet")


def hest_read_geojson(features: list[dict]) -> gpd.GeoDataFrame:
    """The oracle: HEST's ``read_gdf`` for a CellViT GeoJSON, one shapely Polygon per nucleus."""
    rows = [
        (shapely.Polygon(polygon[0]), feature["properties"]["classification"]["name"])
        for feature in features
        for polygon in feature["geometry"]["coordinates"]
    ]
    frame = gpd.GeoDataFrame({"class": [c for _, c in rows]}, geometry=[g for g, _ in rows])
    frame["cell_id"] = np.arange(len(frame))
    return frame


def assert_same_nuclei(nuclei: gpd.GeoDataFrame, source: gpd.GeoDataFrame) -> None:
    """Same ids, classes and exactly the same polygons (source has a ``cell_id`` column)."""
    np.testing.assert_array_equal(nuclei.index.to_numpy(), source["cell_id"].to_numpy())
    assert isinstance(nuclei["class"].dtype, pd.CategoricalDtype)
    np.testing.assert_array_equal(nuclei["class"].astype(str).to_numpy(), source["class"].astype(str).to_numpy())
    assert shapely.equals_exact(nuclei.geometry.to_numpy(), source.geometry.to_numpy(), tolerance=0).all()


def slide_ctx(height: int = 100_000, width: int = 100_000) -> SampleContext:
    return SampleContext("REAL1", 0.25, Technology.VISIUM, (height, width))


def hest_root_with(tmp_path: Path, hest_root: Path, cellvit_files: dict[str, bytes | Path]) -> Path:
    """A copy of the example root (slide and metadata linked) with only the given cellvit_seg files."""
    root = tmp_path / "hest"
    for folder in ("wsis", "metadata"):
        (root / folder).mkdir(parents=True)
        for file in (hest_root / folder).iterdir():
            (root / folder / file.name).symlink_to(file)
    (root / "cellvit_seg").mkdir()
    for name, content in cellvit_files.items():
        target = root / "cellvit_seg" / name
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_bytes(content)
    return root


def test_store_nuclei_equal_the_parquet(sdata, parquet):
    nuclei = sdata["nuclei"]
    assert len(nuclei) == len(parquet) > 30_000
    assert nuclei.index.name == "cell_id"
    assert_same_nuclei(nuclei, parquet)
    assert set(nuclei["class"].cat.categories) == set(parquet["class"])
    assert get_transformation(nuclei, "global") == Identity()
    np.testing.assert_allclose(xy_scale(get_transformation(nuclei, "microns")), TEST_PIXEL_SIZE_UM)


def test_geojson_zip_gives_the_same_nuclei_as_the_parquet(sdata, hest_root, tmp_path):
    archive = hest_root / "cellvit_seg" / f"{SID}_cellvit_seg.geojson.zip"
    with zipfile.ZipFile(archive) as zf:
        features = json.loads(zf.read(f"{SID}_cellvit_seg.geojson"))
    assert_same_nuclei(sdata["nuclei"], hest_read_geojson(features))
    root = hest_root_with(tmp_path, hest_root, {archive.name: archive})
    store = convert_sample(root, SID, tmp_path / "out", elements=["nuclei"])
    from_zip = sd.read_zarr(store)
    assert set(from_zip.shapes) == {"nuclei"}
    pd.testing.assert_frame_equal(
        pd.DataFrame(from_zip["nuclei"].drop(columns="geometry")),
        pd.DataFrame(sdata["nuclei"].drop(columns="geometry")),
    )
    assert shapely.equals_exact(from_zip["nuclei"].geometry.to_numpy(), sdata["nuclei"].geometry.to_numpy(), 0).all()


@pytest.mark.parametrize("layout", ["geojson.zip", "legacy zip", "bare geojson", "FeatureCollection"])
def test_real_nuclei_in_every_hest_layout(layout, tmp_path):
    text = gzip.decompress(REAL_GEOJSON.read_bytes())
    features = json.loads(text)
    if layout == "geojson.zip":
        path = tmp_path / "REAL1_cellvit_seg.geojson.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("REAL1_cellvit_seg.geojson", json.dumps(features, indent=4))  # HEST writes indent=4
    elif layout == "legacy zip":
        path = tmp_path / "REAL1_cellvit_seg.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("REAL1_cellvit_seg.geojson", text)
    elif layout == "bare geojson":
        path = tmp_path / "REAL1_cellvit_seg.geojson"
        path.write_bytes(text)
    else:
        path = tmp_path / "REAL1_cellvit_seg.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    nuclei = read_cellvit(path, slide_ctx())
    assert len(nuclei) == 1359
    assert nuclei["class"].value_counts().to_dict() == {"Connective": 610, "Epithelial": 524, "Inflammatory": 225}
    assert_same_nuclei(nuclei, hest_read_geojson(features))


def test_parquet_written_from_the_geojson_reads_the_same(tmp_path):
    """HEST makes its parquet as ``read_gdf(geojson).to_parquet()``: both files give one element."""
    features = json.loads(gzip.decompress(REAL_GEOJSON.read_bytes()))
    source = hest_read_geojson(features)
    source.to_parquet(tmp_path / "REAL1_cellvit_seg.parquet")
    (tmp_path / "REAL1_cellvit_seg.geojson").write_text(json.dumps(features))
    from_parquet = read_cellvit(tmp_path / "REAL1_cellvit_seg.parquet", slide_ctx())
    from_geojson = read_cellvit(tmp_path / "REAL1_cellvit_seg.geojson", slide_ctx())
    assert_same_nuclei(from_parquet, source)
    assert_same_nuclei(from_geojson, source)


def test_bounding_box_query_in_both_coordinate_systems(sdata):
    nuclei = sdata["nuclei"]
    lo, hi = np.array([500.0, 500.0]), np.array([900.0, 800.0])
    in_px = sd.bounding_box_query(nuclei, ("x", "y"), lo, hi, target_coordinate_system="global")
    in_um = sd.bounding_box_query(
        nuclei, ("x", "y"), lo * TEST_PIXEL_SIZE_UM, hi * TEST_PIXEL_SIZE_UM, target_coordinate_system="microns"
    )
    expected = nuclei.index[nuclei.intersects(shapely.box(*lo, *hi))]
    assert len(expected) > 100
    assert sorted(in_px.index) == sorted(expected) == sorted(in_um.index)


def test_get_extent_in_both_coordinate_systems(sdata):
    minx, miny, maxx, maxy = sdata["nuclei"].total_bounds
    extent = sd.get_extent(sdata["nuclei"], coordinate_system="global")
    np.testing.assert_allclose([*extent["x"], *extent["y"]], [minx, maxx, miny, maxy])
    extent = sd.get_extent(sdata["nuclei"], coordinate_system="microns")
    np.testing.assert_allclose([*extent["x"], *extent["y"]], np.array([minx, maxx, miny, maxy]) * TEST_PIXEL_SIZE_UM)


def test_aggregate_nuclei_per_spot(sdata):
    nuclei, spots = sdata["nuclei"], sdata["spots"]
    by_shapes = sd.aggregate(values=nuclei, by=spots, value_key="class", agg_func="count").tables["table"]
    centroids = PointsModel.parse(
        pd.DataFrame({"x": nuclei.centroid.x, "y": nuclei.centroid.y, "class": nuclei["class"].to_numpy()}),
        transformations={"global": Identity()},
    )
    by_centroid = sd.aggregate(values=centroids, by=spots, value_key="class", agg_func="count").tables["table"]
    # oracle: nuclei whose centroid is in the spot's circle (as spatialdata draws it, 16 segments a quarter)
    circles = shapely.buffer(spots.geometry.to_numpy(), spots["radius"].to_numpy(), quad_segs=16)
    xy = shapely.get_coordinates(nuclei.centroid)
    tree = shapely.STRtree(shapely.points(xy))
    spot_of, _ = tree.query(circles, predicate="contains")
    expected = np.bincount(spot_of, minlength=len(spots))
    counts = pd.Series(np.asarray(by_centroid.X.todense()).ravel(), index=by_centroid.obs_names)
    np.testing.assert_array_equal(counts.loc[spots.index].to_numpy(), expected)
    assert expected.sum() > 1000
    # by polygon overlap, per class: a nucleus on a spot's rim counts too
    assert list(by_shapes.var_names) == list(nuclei["class"].cat.categories)
    assert by_shapes.X.sum() >= expected.sum()


def test_nuclei_are_not_read_when_not_wanted(hest_root):
    sdata = read_hest(hest_root, SID, elements=["spots", "table"])
    assert "nuclei" not in sdata.shapes


def test_corrupt_parquet_names_sample_and_file(hest_root, tmp_path):
    source = (hest_root / "cellvit_seg" / f"{SID}_cellvit_seg.parquet").read_bytes()
    root = hest_root_with(tmp_path, hest_root, {f"{SID}_cellvit_seg.parquet": source[: len(source) // 2]})
    with pytest.raises(HestInputError, match=rf"sample {SID} .*_cellvit_seg\.parquet.*unreadable or truncated"):
        read_hest(root, SID, elements=["nuclei"])


def test_truncated_geojson_zip_names_sample_and_file(hest_root, tmp_path):
    source = (hest_root / "cellvit_seg" / f"{SID}_cellvit_seg.geojson.zip").read_bytes()
    root = hest_root_with(tmp_path, hest_root, {f"{SID}_cellvit_seg.geojson.zip": source[: len(source) // 2]})
    with pytest.raises(HestInputError, match=rf"sample {SID} .*_cellvit_seg\.geojson\.zip"):
        read_hest(root, SID, elements=["nuclei"])


def test_nuclei_off_the_slide_are_rejected(hest_root, parquet, tmp_path):
    shifted = parquet.copy()
    shifted.geometry = shifted.geometry.translate(xoff=5000)  # real nuclei of another, wider slide
    path = tmp_path / "shifted.parquet"
    shifted.to_parquet(path)
    root = hest_root_with(tmp_path, hest_root, {f"{SID}_cellvit_seg.parquet": path})
    with pytest.raises(HestInputError, match=rf"sample {SID} .*_cellvit_seg\.parquet.*nuclei .* lie outside the"):
        read_hest(root, SID, elements=["nuclei"])


def test_parquet_without_class_or_with_points_is_rejected(parquet, tmp_path):
    parquet.drop(columns="class").to_parquet(tmp_path / "a.parquet")
    with pytest.raises(HestInputError, match="no 'class' column"):
        read_cellvit(tmp_path / "a.parquet", slide_ctx())
    points = parquet.copy()
    points.geometry = points.centroid
    points.to_parquet(tmp_path / "b.parquet")
    with pytest.raises(HestInputError, match="nuclei must be polygons, found a POINT"):
        read_cellvit(tmp_path / "b.parquet", slide_ctx())


def test_geojson_without_classes_is_rejected(tmp_path):
    features = json.loads(gzip.decompress(REAL_GEOJSON.read_bytes()))
    del features[0]["properties"]["classification"]
    (tmp_path / "x.geojson").write_text(json.dumps(features))
    with pytest.raises(HestInputError, match=r"REAL1 .*x\.geojson.*classification\.name"):
        read_cellvit(tmp_path / "x.geojson", slide_ctx())
