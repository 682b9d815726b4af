from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import spatialdata as sd
from spatialdata.transformations import Identity, get_transformation

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.readers.sample import read_hest
from hest_spatialdata.readers.tissue import read_tissue
from hest_spatialdata.source.metadata import read_metadata
from hest_spatialdata.storage.store import convert_sample

from .helpers import REALDATA, TEST_PIXEL_SIZE_UM, xy_scale

#: Real HEST ``tissue_seg/{id}_contours.geojson`` files (gzipped) and their real metadata JSONs.
CONTOURS = REALDATA / "hest_tissue_seg"
METADATA = REALDATA / "hest_metadata" / "metadata_json"
#: What docs/example_data.md says about them: polygons, holes per polygon.
REAL = {"TENX68": [0, 0], "TENX71": [3], "MEND90": [0, 0, 0, 0, 0, 5]}


def real_features(sample_id: str) -> list[dict]:
    return json.loads(gzip.decompress((CONTOURS / f"{sample_id}_contours.geojson.gz").read_bytes()))["features"]


def real_hest_root(tmp_path: Path, sample_id: str, contours_text: str | None = None) -> Path:
    """A HEST root holding only the real metadata and tissue contours of a real sample."""
    root = tmp_path / "hest"
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "tissue_seg").mkdir(exist_ok=True)
    shutil.copyfile(METADATA / f"{sample_id}.json", root / "metadata" / f"{sample_id}.json")
    if contours_text is None:
        contours_text = gzip.decompress((CONTOURS / f"{sample_id}_contours.geojson.gz").read_bytes()).decode()
    (root / "tissue_seg" / f"{sample_id}_contours.geojson").write_text(contours_text)
    return root


def ctx_of(sample_id: str) -> SampleContext:
    from hest_spatialdata.source.metadata import pixel_size_um, technology

    meta = read_metadata(METADATA / f"{sample_id}.json")
    shape = (int(meta["fullres_px_height"]), int(meta["fullres_px_width"]))
    return SampleContext(sample_id, pixel_size_um(meta), technology(meta), shape, meta)


def hest_legacy_list(features: list[dict]) -> list[dict]:
    """The deprecated layout (HEST's ``write_geojson(..., index_key='hole')``): per tissue id one Feature whose
    MultiPolygon holds the outline then the holes as single rings, ``hole`` listing the hole indices."""
    legacy = []
    for feature in features:
        rings = feature["geometry"]["coordinates"]
        legacy.append({
            "type": "Feature",
            "id": f"x-id-{feature['properties']['tissue_id']}",
            "geometry": {"type": "MultiPolygon", "coordinates": [[ring] for ring in rings]},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": feature["properties"]["tissue_id"], "color": [255, 0, 0]},
                "hole": list(range(1, len(rings))),
            },
        })  # fmt: skip
    return legacy


@pytest.mark.parametrize("sample_id", sorted(REAL))
def test_real_contours_round_trip_through_the_store(sample_id, tmp_path):
    store = convert_sample(real_hest_root(tmp_path, sample_id), sample_id, tmp_path / "out", elements=["tissue"])
    sdata = sd.read_zarr(store)
    assert set(sdata.shapes) == {"tissue"}
    tissue = sdata["tissue"]
    features = real_features(sample_id)
    assert len(tissue) == len(features) == len(REAL[sample_id])
    assert list(tissue["tissue_id"]) == [f["properties"]["tissue_id"] for f in features]
    assert all(isinstance(t, str) for t in tissue["tissue_id"])
    assert [len(p.interiors) for p in tissue.geometry] == REAL[sample_id]
    source = np.array([shapely.geometry.shape(f["geometry"]) for f in features], dtype=object)
    assert shapely.equals_exact(tissue.geometry.to_numpy(), source, tolerance=0).all()
    ps = read_metadata(METADATA / f"{sample_id}.json")["pixel_size_um_estimated"]
    np.testing.assert_allclose(xy_scale(get_transformation(tissue, "microns")), ps)
    assert get_transformation(tissue, "global") == Identity()


def test_tenx68_matches_hests_own_numbers(tmp_path):
    """HEST PR #63 shows ``tissue_contours`` (2, 2) for TENX68; docs/example_data.md gives the bounds."""
    tissue = read_tissue(
        real_hest_root(tmp_path, "TENX68") / "tissue_seg" / "TENX68_contours.geojson", ctx_of("TENX68")
    )
    assert tissue.shape == (2, 2)
    np.testing.assert_array_equal(tissue.total_bounds, [764, 3077, 18007, 37046])
    extent = sd.get_extent(tissue, coordinate_system="microns")
    ps = ctx_of("TENX68").pixel_size_um
    np.testing.assert_allclose([*extent["x"], *extent["y"]], np.array([764, 18007, 3077, 37046]) * ps)


@pytest.mark.parametrize("sample_id", ["TENX71", "MEND90"])
def test_deprecated_qupath_layout_keeps_the_holes(sample_id, tmp_path):
    features = real_features(sample_id)
    path = tmp_path / f"{sample_id}_contours.geojson"
    path.write_text(json.dumps(hest_legacy_list(features), indent=4))
    tissue = read_tissue(path, ctx_of(sample_id))
    assert [len(p.interiors) for p in tissue.geometry] == REAL[sample_id]
    assert list(tissue["tissue_id"]) == [f["properties"]["tissue_id"] for f in features]
    source = np.array([shapely.geometry.shape(f["geometry"]) for f in features], dtype=object)
    assert shapely.equals_exact(tissue.geometry.to_numpy(), source, tolerance=0).all()


def test_example_store_tissue_equals_its_contours_file(visium_store, hest_root):
    tissue = sd.read_zarr(visium_store)["tissue"]
    source = gpd.read_file(hest_root / "tissue_seg" / f"{EXAMPLE_SAMPLE_ID}_contours.geojson")
    assert list(tissue["tissue_id"]) == list(source["tissue_id"])
    assert shapely.equals_exact(tissue.geometry.to_numpy(), source.geometry.to_numpy(), tolerance=0).all()
    assert sum(len(p.interiors) for p in tissue.geometry) >= 1
    np.testing.assert_allclose(xy_scale(get_transformation(tissue, "microns")), TEST_PIXEL_SIZE_UM)


def test_bounding_box_query_keeps_the_holes(tmp_path):
    tissue = read_tissue(
        real_hest_root(tmp_path, "TENX71") / "tissue_seg" / "TENX71_contours.geojson", ctx_of("TENX71")
    )
    hole = shapely.Polygon(tissue.geometry.iloc[0].interiors[0])
    minx, miny, maxx, maxy = hole.bounds
    queried = sd.bounding_box_query(
        tissue, ("x", "y"), [minx - 10, miny - 10], [maxx + 10, maxy + 10], target_coordinate_system="global"
    )
    assert len(queried) == 1
    assert not queried.geometry.iloc[0].contains(hole.representative_point())


def test_contours_off_the_slide_are_rejected(tmp_path):
    root = real_hest_root(tmp_path, "TENX68")
    meta = json.loads((root / "metadata" / "TENX68.json").read_text())
    meta["fullres_px_height"] = 20000  # the contours reach y = 37046
    (root / "metadata" / "TENX68.json").write_text(json.dumps(meta))
    with pytest.raises(HestInputError, match=r"sample TENX68 .*TENX68_contours\.geojson.*tissue contours .*outside"):
        read_hest(root, "TENX68", elements=["tissue"])


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"type": "FeatureCollection", "features": [', "not readable GeoJSON"),
        ("[{]", "invalid"),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"name": "a"},'
            ' "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}]}',
            "no 'tissue_id' property",
        ),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"tissue_id": "0"},'
            ' "geometry": {"type": "Point", "coordinates": [5, 5]}}]}',
            "must be polygons, found a POINT",
        ),
    ],
)
def test_bad_contours_name_sample_and_file(text, problem, tmp_path):
    root = real_hest_root(tmp_path, "TENX71", contours_text=text)
    with pytest.raises(HestInputError, match=rf"sample TENX71 .*TENX71_contours\.geojson.*{problem}"):
        read_hest(root, "TENX71", elements=["tissue"])
