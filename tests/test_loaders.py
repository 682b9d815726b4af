from __future__ import annotations

import h5py
import numpy as np
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


def test_loader_patches_match_hests_patches(visium_store, h5):
    dataset = PatchDataset(visium_store, barcodes=h5["barcode"])  # 224 px at 0.5 µm/px, from the path
    assert len(dataset) == len(h5["barcode"]) > 1000
    assert dataset.level == 0  # the 2 µm/px slide has nothing finer
    for i in range(0, len(dataset), 25):
        image, _, barcode = dataset[i]
        assert barcode == h5["barcode"][i]
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8
        assert np.abs(image.astype(int) - h5["img"][i]).mean() < 2


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
