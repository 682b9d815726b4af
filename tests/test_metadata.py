from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from hest_spatialdata._constants import Technology
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.source.metadata import pixel_size_um, read_metadata, spot_diameter_um, technology

METADATA_DIR = Path(__file__).parent / "data" / "hest_metadata"
REAL_JSONS = sorted((METADATA_DIR / "metadata_json").glob("*.json"))


def test_all_real_metadata_jsons_parse():
    assert len(REAL_JSONS) == 503
    with_nan = 0
    for path in REAL_JSONS:
        text = path.read_text(encoding="utf-8")
        with_nan += "NaN" in text
        meta = read_metadata(path, path.stem)
        assert meta["id"] == path.stem
        assert pixel_size_um(meta, path.stem, path) > 0
        assert isinstance(technology(meta, path.stem, path), Technology)
        # NaN became None, so the result is strict JSON again (what zarr attrs and uns need)
        json.dumps(meta, allow_nan=False)
    assert with_nan == 490  # docs/example_data.md: 490 of the 503 real files hold bare NaN tokens


def test_nan_becomes_none_and_nested_and_unicode_keys_survive():
    tenx131 = read_metadata(METADATA_DIR / "metadata_json" / "TENX131.json")
    assert any("µm" in key for key in tenx131)  # "Number of Squares Under Tissue 2 µm"
    tenx95 = read_metadata(METADATA_DIR / "metadata_json" / "TENX95.json")
    assert isinstance(tenx95["images"], dict)  # the embedded experiment.xenium
    assert tenx95["pixel_size_um_embedded"] == 1.0  # bogus, and never used
    assert pixel_size_um(tenx95) == pytest.approx(0.2125, rel=1e-3)
    raw = json.loads((METADATA_DIR / "metadata_json" / "SPA154.json").read_text())
    assert math.isnan(raw["treatment_comment"])
    assert read_metadata(METADATA_DIR / "metadata_json" / "SPA154.json")["treatment_comment"] is None


def test_technologies_are_normalised_across_real_files():
    seen = {}
    for path in REAL_JSONS:
        meta = read_metadata(path)
        seen.setdefault(meta["st_technology"], set()).add(technology(meta))
    assert seen["Visium HD 3'"] == {Technology.VISIUM_HD}
    assert seen["Xenium 5k"] == {Technology.XENIUM}
    assert seen["Spatial Transcriptomics"] == {Technology.ST}
    assert seen["Visium"] == {Technology.VISIUM}


def test_metadata_pixel_sizes_match_the_catalog_csv():
    catalog = pd.read_csv(METADATA_DIR / "HEST_v1_3_0.csv", encoding="utf-8-sig").set_index("id")
    compared = 0
    for path in REAL_JSONS:
        if path.stem in catalog.index:
            expected = catalog.loc[path.stem, "pixel_size_um_estimated"]
            assert pixel_size_um(read_metadata(path)) == pytest.approx(expected, rel=1e-6)
            compared += 1
    assert compared > 450


def test_spot_diameter_from_metadata_or_technology():
    assert spot_diameter_um({"spot_diameter": 150.0}, Technology.ST) == 150.0
    assert spot_diameter_um({"spot_diameter": None}, Technology.ST) == 100.0
    assert spot_diameter_um({}, Technology.VISIUM) == 55.0


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"pixel_size_um_estimated": NaN}', "missing or NaN"),
        ('{"id": "X"}', "missing or NaN"),
        ('{"pixel_size_um_estimated": "abc"}', "not a number"),
        ('{"pixel_size_um_estimated": -0.5}', "positive"),
    ],
)
def test_bad_pixel_size_is_a_clear_error(tmp_path, content, problem):
    path = tmp_path / "S1.json"
    path.write_text(content)
    with pytest.raises(HestInputError, match=problem) as info:
        pixel_size_um(read_metadata(path, "S1"), "S1", path)
    assert "S1" in str(info.value) and "S1.json" in str(info.value)


def test_truncated_metadata_json_is_a_clear_error(tmp_path):
    path = tmp_path / "S2.json"
    path.write_text((METADATA_DIR / "metadata_json" / "ZEN61.json").read_text()[:200])
    with pytest.raises(HestInputError, match="invalid or truncated") as info:
        read_metadata(path, "S2")
    assert "sample S2" in str(info.value)
