"""The ``nuclei_labels`` element: the CellViT nuclei rasterised as a lazy labels pyramid."""

from __future__ import annotations

import dask
import numpy as np
import shapely

from hest_spatialdata._constants import Elements
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.readers.nuclei_labels import LABEL_ID_RULE, class_outlines, level_shapes
from hest_spatialdata.sample import read_hest


def test_labels_hold_each_nucleus_under_its_row_id(hest_root) -> None:
    sdata = read_hest(hest_root, EXAMPLE_SAMPLE_ID, elements=["he", "nuclei", "nuclei_labels"])
    nuclei, labels = sdata["nuclei"], sdata["nuclei_labels"]
    he0 = sdata["he"]["scale0"]["image"]
    assert labels["scale0"]["image"].shape == he0.shape[1:]  # level 0 covers the slide pixel for pixel
    shapes = [labels[k]["image"].shape for k in sorted(labels.children, key=lambda k: int(k[5:]))]
    assert shapes == level_shapes(he0.shape[1:]) and len(shapes) > 1
    assert sdata.attrs["hest"]["nuclei_labels"] == LABEL_ID_RULE
    level0 = labels["scale0"]["image"].data.compute()
    # a point well inside each nucleus (not overlapped by a later one) carries label row + 1
    inside = shapely.get_coordinates(shapely.point_on_surface(nuclei.geometry.to_numpy()))
    x, y = np.floor(inside).astype(int).T
    ids = level0[y, x]
    assert np.mean(ids == nuclei.index.to_numpy() + 1) > 0.98  # cell_id + 1
    assert np.array_equal(nuclei.index.to_numpy(), np.arange(len(nuclei)))  # HEST's cell_id
    assert level0.max() == len(nuclei)
    area = nuclei.geometry.area.sum()
    assert 0.9 < np.count_nonzero(level0) / area < 1.1
    # every level is drawn from the polygons: the coarsest still shows most nuclei
    coarsest = labels[f"scale{len(shapes) - 1}"]["image"].data.compute()
    assert len(np.unique(coarsest)) > 0.3 * len(nuclei)


def test_labels_are_drawn_tile_by_tile(hest_root) -> None:
    sdata = read_hest(hest_root, EXAMPLE_SAMPLE_ID, elements=["nuclei_labels"], chunk_size=256)
    level0 = sdata["nuclei_labels"]["scale0"]["image"].data
    assert level0.numblocks[0] > 2 and level0.numblocks[1] > 2
    block = level0.blocks[1, 1].compute()
    with dask.config.set(scheduler="sync"):
        assert np.array_equal(block, level0.compute()[256:512, 256:512])
    assert Elements.NUCLEI not in sdata.shapes  # labels only, when only they are wanted


def test_class_outlines_mark_the_edge_of_each_nucleus() -> None:
    import dask.array as da

    labels = np.zeros((8, 8), np.uint32)
    labels[1:4, 1:4] = 1
    labels[4:7, 1:4] = 2  # touching nucleus 1
    outlines = class_outlines(da.from_array(labels, chunks=4), np.array([0, 3, 5], np.uint8)).compute()
    assert outlines[2, 2] == 0  # inside nucleus 1
    assert outlines[1, 1] == 3 and outlines[3, 2] == 3  # its edge, also where it touches nucleus 2
    assert outlines[4, 2] == 5 and outlines[6, 3] == 5
    assert outlines[0].sum() == 0 and outlines[7].sum() == 0
