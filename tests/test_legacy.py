"""``hs.to_legacy_anndata``: a store as scanpy's legacy spatial AnnData, drawn by ``sc.pl.spatial``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hest_spatialdata as hs

pytest.importorskip("spatialdata_io")
sc = pytest.importorskip("scanpy")


def test_one_library_from_the_pyramid(visium_store: Path, sdata) -> None:
    adata = hs.to_legacy_anndata(visium_store)
    sample_id = sdata.attrs["hest"]["sample_id"]
    assert list(adata.uns["spatial"]) == [sample_id]
    library = adata.uns["spatial"][sample_id]
    hires, lowres = library["images"]["hires"], library["images"]["lowres"]
    factors = library["scalefactors"]
    levels = [sdata["he"][name]["image"] for name in sorted(sdata["he"].children)]
    height, width = levels[0].shape[1:]
    for image, scalef, limit in (
        (hires, factors["tissue_hires_scalef"], 2000),
        (lowres, factors["tissue_lowres_scalef"], 600),
    ):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and max(image.shape[:2]) <= limit
        assert image.shape[1] == pytest.approx(width * scalef, abs=1.5)
        assert image.shape[0] == pytest.approx(height * scalef, abs=1.5)
        # the image is a level of the store's own pyramid, pixel for pixel
        same = [level for level in levels if level.shape[1:] == image.shape[:2]]
        if same:
            np.testing.assert_array_equal(image, np.moveaxis(np.asarray(same[0].data), 0, -1))
    assert hires.shape[1] > lowres.shape[1]
    radius = sdata["spots"]["radius"].to_numpy()
    assert factors["spot_diameter_fullres"] == pytest.approx(2 * radius[0])
    # obsm["spatial"] = the spot centres in level-0 pixels, row for row
    spots = sdata["spots"].loc[adata.obs_names]
    np.testing.assert_allclose(adata.obsm["spatial"], np.column_stack([spots.geometry.x, spots.geometry.y]))
    assert adata.n_obs == sdata["table"].n_obs and adata.n_vars == sdata["table"].n_vars


def test_sc_pl_spatial_draws_it(sdata, tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adata = hs.to_legacy_anndata(sdata, library_id="lib")
    gene = adata.var_names[int(np.argmax(np.asarray(adata.X.sum(axis=0)).ravel()))]
    axes = sc.pl.spatial(adata, color=gene, show=False)
    ax = axes[0] if isinstance(axes, list) else axes
    assert ax.images, "no H&E drawn"
    assert ax.collections and len(ax.collections[0].get_paths()) == adata.n_obs  # one circle per spot
    assert ax.images[0].get_array().shape[:2] == adata.uns["spatial"]["lib"]["images"]["hires"].shape[:2]
    # the spots land on the image: sc.pl.spatial scales obsm["spatial"] by tissue_hires_scalef
    x0, x1 = sorted(ax.get_xlim())
    image_width = adata.uns["spatial"]["lib"]["images"]["hires"].shape[1]
    assert 0 < x1 - x0 <= 1.1 * image_width and -0.05 * image_width < x0 < x1 < 1.05 * image_width
    plt.gcf().savefig(tmp_path / "spatial.png")
    assert (tmp_path / "spatial.png").stat().st_size > 10_000
    plt.close("all")


def test_xenium_pseudo_spots_are_squares(xenium_store: Path) -> None:
    import spatialdata as sd

    from hest_spatialdata.source.metadata import PSEUDO_SPOT_SIDE_UM

    sdata = sd.read_zarr(xenium_store)
    adata = hs.to_legacy_anndata(sdata)
    hest = sdata.attrs["hest"]
    factors = adata.uns["spatial"][hest["sample_id"]]["scalefactors"]
    side_um = PSEUDO_SPOT_SIDE_UM[hest["technology"]]
    assert factors["spot_diameter_fullres"] == pytest.approx(side_um / hest["pixel_size_um"], rel=1e-6)
    squares = sdata["spots"].loc[adata.obs_names].geometry.centroid
    np.testing.assert_allclose(adata.obsm["spatial"], np.column_stack([squares.x, squares.y]))
