from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.loaders import PatchDataset

from .helpers import TEST_PIXEL_SIZE_UM

SID = EXAMPLE_SAMPLE_ID


@pytest.fixture(scope="module")
def h5(hest_root):
    with h5py.File(hest_root / "patches" / f"{SID}.h5", "r") as f:
        return {"img": f["img"][()], "barcode": f["barcode"].asstr()[()][:, 0]}


def test_loader_patches_are_hests_patches(visium_store, h5):
    """Every patch of HEST's h5 (cv2.resize of a 56-px square at 2 µm/px) is the dataset's, pixel for pixel."""
    dataset = PatchDataset(visium_store, barcodes=h5["barcode"])  # 224 px at 0.5 µm/px, from the path
    assert len(dataset) == len(h5["barcode"]) > 1000
    assert dataset.level == 0  # the 2 µm/px slide has nothing finer
    images = dataset.images(range(len(dataset)))
    assert list(dataset.barcodes) == list(h5["barcode"])
    assert images[0].shape == (224, 224, 3) and images[0].dtype == np.uint8
    np.testing.assert_array_equal(np.stack(images), h5["img"])
    smooth = PatchDataset(visium_store, barcodes=h5["barcode"][:50], resample="antialias")
    assert 0 < np.abs(np.stack(smooth.images(range(50))).astype(int) - h5["img"][:50]).mean() < 2


def test_patches_of_a_027_slide_are_hests_patches(sdata, tmp_path):
    """A 0.27 µm/px slide (each patch a 415-px square reduced to 224): the dataset's patches are HEST's h5 patches."""
    import spatialdata as sd
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    from hest_spatialdata.example import write_patches

    slide = np.asarray(sdata["he"]["scale0"]["image"].data[:, :1500, :2000]).transpose(1, 2, 0)  # real H&E texture
    xy = np.stack(np.meshgrid(np.arange(-150.0, 2150, 173.3), np.arange(-100.0, 1650, 161.7)), -1).reshape(-1, 2)
    xy += np.random.default_rng(0).uniform(0, 1, xy.shape)  # fractional centres, some off the slide
    names = [f"s{i}" for i in range(len(xy))]
    adata = ad.AnnData(np.ones((len(xy), 1), np.float32), obs=pd.DataFrame(index=names), obsm={"spatial": xy})
    h5_path = write_patches(tmp_path / "p.h5", slide, adata, 0.27)
    with h5py.File(h5_path, "r") as f:
        images, barcodes = f["img"][()], f["barcode"].asstr()[()][:, 0]
    transformations = {"global": Identity(), "microns": Scale([0.27, 0.27], axes=("x", "y"))}
    adata.obs["region"] = pd.Categorical(["spots"] * len(xy))
    adata.obs["spot_id"] = names
    image = Image2DModel.parse(slide.transpose(2, 0, 1), dims=("c", "y", "x"), transformations=transformations)
    memory = sd.SpatialData(
        images={"he": image.chunk({"y": 512, "x": 512})},
        shapes={"spots": ShapesModel.parse(xy, geometry=0, radius=np.full(len(xy), 50.0), index=pd.Index(names),
                                           transformations=transformations)},
        tables={"table": TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")},
    )  # fmt: skip
    dataset = PatchDataset(memory, barcodes=barcodes)
    assert dataset.level == 0 and dataset._cutter.size == 415 and len(barcodes) > 50
    np.testing.assert_array_equal(np.stack(dataset.images(range(len(dataset)))), images)


def test_expression_is_the_table_row(sdata):
    table = sdata["table"]
    genes = list(table.var_names[[3, 0, 17]])
    dataset = PatchDataset(sdata, genes=genes)
    assert list(dataset.genes) == genes
    assert list(dataset.barcodes) == list(table.obs_names)
    for i in (0, 7, len(dataset) - 1):
        _, expression, barcode = dataset[i]
        expected = table[barcode, genes].X.toarray().ravel()
        assert expression.dtype == np.float32
        np.testing.assert_array_equal(expression, expected)
    np.testing.assert_allclose(PatchDataset(sdata, genes=genes, log1p=True)[7][1], np.log1p(dataset[7][1]), rtol=1e-6)


def test_genes_by_original_name_and_unknown_genes(sdata):
    table = sdata["table"]
    original = table.var["gene_name"].iloc[5]
    assert list(PatchDataset(sdata, genes=[original]).genes) == [table.var_names[5]]
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        PatchDataset(sdata, genes=["NOT_A_GENE"])
    with pytest.raises(KeyError, match="not spots of the table"):
        PatchDataset(sdata, barcodes=["NOT_A_SPOT"])


@pytest.mark.parametrize(("um_per_px", "level"), [(0.5, 0), (2.0, 0), (4.0, 1), (10.0, 2), (1000.0, 4)])
def test_coarsest_level_at_least_as_fine_as_asked(sdata, um_per_px, level):
    dataset = PatchDataset(sdata, patch_size_px=16, um_per_px=um_per_px)
    assert dataset.level == level
    assert dataset.level_um_per_px <= um_per_px * 1.01 or level == 0
    assert dataset[0][0].shape == (16, 16, 3)


def test_coarser_level_patch_matches_level_0(sdata):
    """A 4 µm/px patch read from level 1 looks like the same area of level 0, downsampled."""
    coarse = PatchDataset(sdata, patch_size_px=28, um_per_px=4.0)
    fine = PatchDataset(sdata, patch_size_px=56, um_per_px=TEST_PIXEL_SIZE_UM)
    assert (coarse.level, fine.level) == (1, 0)
    diffs = []
    for i in range(0, len(coarse), 50):
        reference = np.asarray(Image.fromarray(fine[i][0]).resize((28, 28), Image.BOX))
        diffs.append(np.abs(coarse[i][0].astype(int) - reference).mean())
    assert np.median(diffs) < 8


def test_indexing_and_iteration(sdata):
    dataset = PatchDataset(sdata, patch_size_px=8, um_per_px=8.0, genes=list(sdata["table"].var_names[:2]))
    assert dataset[-1][2] == dataset.barcodes[-1]
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    items = list(dataset)
    assert len(items) == len(dataset) and items[3][2] == dataset.barcodes[3]
    assert "PatchDataset(" in repr(dataset)
