from __future__ import annotations

import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import shapely
import spatialdata as sd
from spatialdata.models import get_table_keys
from spatialdata.transformations import Identity, get_transformation

from hest_spatialdata._constants import Technology
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.readers.spots import spot_shapes, valid_var_names
from hest_spatialdata.source.metadata import read_metadata

from .helpers import TEST_PIXEL_SIZE_UM, xy_scale


@pytest.fixture(scope="module")
def source(hest_root):
    return ad.read_h5ad(hest_root / "st" / f"{EXAMPLE_SAMPLE_ID}.h5ad")


def test_spot_centres_radii_and_index_are_exact(sdata, source):
    spots = sdata["spots"]
    assert list(spots.index) == list(source.obs_names)
    np.testing.assert_array_equal(np.column_stack([spots.geometry.x, spots.geometry.y]), source.obsm["spatial"])
    np.testing.assert_allclose(spots["radius"], 55 / 2 / TEST_PIXEL_SIZE_UM)
    assert get_transformation(spots, "global") == Identity()
    np.testing.assert_allclose(xy_scale(get_transformation(spots, "microns")), TEST_PIXEL_SIZE_UM)


def test_table_counts_and_obs_are_unchanged(sdata, source):
    table = sdata["table"]
    assert list(table.obs_names) == list(source.obs_names)
    assert table.X.dtype == source.X.dtype and type(table.X) is type(source.X)
    assert (table.X != source.X).nnz == 0
    pd.testing.assert_frame_equal(table.obs[source.obs.columns], source.obs)
    np.testing.assert_array_equal(table.obsm["spatial"], source.obsm["spatial"])
    np.testing.assert_array_equal(
        table.uns["spatial"]["ST"]["images"]["downscaled_fullres"],
        source.uns["spatial"]["ST"]["images"]["downscaled_fullres"],
    )


def test_table_annotates_spots(sdata):
    table = sdata["table"]
    region, region_key, instance_key = get_table_keys(table)
    assert (region, region_key, instance_key) == ("spots", "region", "spot_id")
    assert isinstance(table.obs["region"].dtype, pd.CategoricalDtype)
    assert list(table.obs["spot_id"]) == list(sdata["spots"].index)
    shapes, joined = sd.join_spatialelement_table(sdata, spatial_element_names="spots", table_name="table", how="inner")
    assert len(joined) == len(sdata["spots"])


def test_metadata_is_in_the_table_as_strict_json(sdata, hest_root):
    stored = json.loads(sdata["table"].uns["hest_metadata"])
    assert stored == read_metadata(hest_root / "metadata" / f"{EXAMPLE_SAMPLE_ID}.json")
    assert stored["oncotree_code"] is None  # a bare NaN in the source file
    assert sdata.attrs["hest"]["metadata"] == stored


def test_var_names_are_made_valid_and_originals_kept():
    var = pd.DataFrame(index=["CD4", "HLA-A", "Gene/ABC", "Gene ABC", "TRBV7-2*01", "Gene_ABC"])
    names = valid_var_names(var, var.index)
    assert list(names) == ["CD4", "HLA-A", "Gene_ABC", "Gene_ABC-1", "TRBV7-2_01", "Gene_ABC-2"]
    assert list(var["gene_name"]) == ["CD4", "HLA-A", "Gene/ABC", "Gene ABC", "TRBV7-2*01", "Gene_ABC"]
    assert names.is_unique


@pytest.mark.parametrize(("technology", "side_um"), [(Technology.XENIUM, 100.0), (Technology.VISIUM_HD, 128.0)])
def test_pseudo_spots_are_squares_of_the_right_side(technology, side_um):
    ps = 0.2737
    ctx = SampleContext("S", ps, technology, (10_000, 10_000))
    centres = _grid_with_gaps(side_um / ps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the nominal side: no warning
        squares = spot_shapes(centres, pd.Index([f"s{k}" for k in range(len(centres))]), ctx)
    assert set(squares.geom_type) == {"Polygon"}
    np.testing.assert_allclose(shapely.area(squares.geometry), (side_um / ps) ** 2)
    np.testing.assert_allclose(np.column_stack([squares.centroid.x, squares.centroid.y]), centres)
    assert ctx.shared["spots"] == {
        "shape": "square", "side_um": pytest.approx(side_um), "side_from": "spacing of the centres",
        "nominal_side_um": side_um,
    }  # fmt: skip


def test_pseudo_spots_pooled_at_another_size_take_their_grid_spacing():
    ps = 0.2125
    ctx = SampleContext("TENX122", ps, Technology.XENIUM, (20_000, 20_000))
    centres = _grid_with_gaps(57.9 / ps)
    with pytest.warns(UserWarning, match=r"TENX122.*57\.9 µm squares.*not the nominal 100 µm"):
        squares = spot_shapes(centres, pd.Index([f"s{k}" for k in range(len(centres))]), ctx)
    np.testing.assert_allclose(shapely.area(squares.geometry), (57.9 / ps) ** 2)
    assert ctx.shared["spots"]["side_um"] == pytest.approx(57.9)
    first, second = squares.geometry.iloc[0], squares.geometry.iloc[1]  # neighbours: they touch, never overlap
    assert shapely.intersection(first, second).area < 1e-6 and shapely.distance(first, second) < 1e-6


def _grid_with_gaps(step: float) -> np.ndarray:
    """Centres of a 12 x 9 square grid of ``step`` px, a third of the squares dropped (empty pseudo-spots)."""
    rows, cols = np.divmod(np.arange(108), 12)
    keep = np.random.default_rng(0).random(108) > 0.33
    keep[:2] = True
    return np.column_stack([500.0 + (cols[keep] + 0.5) * step, 800.0 + (rows[keep] + 0.5) * step])


def test_st_spots_use_the_metadata_diameter():
    ctx = SampleContext("SPA1", 1.0, Technology.ST, (5000, 5000), metadata={"spot_diameter": 150.0})
    circles = spot_shapes(np.array([[10.0, 20.0]]), pd.Index(["001x002"]), ctx)
    assert circles["radius"].iloc[0] == 75.0
