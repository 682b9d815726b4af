"""The ``nuclei_labels`` element: the CellViT nuclei rasterised as a lazy labels pyramid."""

from __future__ import annotations

import dask
import numpy as np
import shapely

from hest_spatialdata._constants import Elements
from hest_spatialdata.example import EXAMPLE_SAMPLE_ID, nuclei_tiles, translated_copies
from hest_spatialdata.readers.nuclei_labels import LABEL_ID_RULE, class_outlines, level_shapes, nuclei_label_levels
from hest_spatialdata.readers.sample import read_hest


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


def test_labels_equal_the_scikit_image_rule_pixel_for_pixel() -> None:
    """Real CellViT nuclei, each overlapped by a shifted copy, MultiPolygons, holes, chunk edges cutting nuclei:
    every level equals :class:`_ReferenceRule` (scikit-image per polygon, the rule before the compiled fill)."""
    tile = nuclei_tiles()[0]
    nuclei = translated_copies(tile, np.array([[0.0, 0.0], [3.3, 2.7]]), 1.0).geometry.to_numpy()  # overlapping
    for k in range(0, len(nuclei), 13):  # a MultiPolygon: only its largest part is drawn
        nuclei[k] = shapely.MultiPolygon([shapely.affinity.scale(nuclei[k], 0.5, 0.5), nuclei[k]])
    for k in range(5, len(nuclei), 13):  # a hole: not drawn
        nuclei[k] = shapely.Polygon(nuclei[k].exterior, [shapely.affinity.scale(nuclei[k], 0.3, 0.3).exterior])
    ids = np.arange(1, len(nuclei) + 1)
    slide_shape, chunk = (2003, 1999), 300
    levels = nuclei_label_levels(nuclei, ids, slide_shape, chunk)
    assert len(levels) == 2
    for expected in _drawn_as_the_reference(levels, nuclei, ids, chunk):
        assert len(np.unique(expected)) > 0.8 * len(nuclei)  # most nuclei show (overlapped ones partly)


def _drawn_as_the_reference(levels: list, nuclei: np.ndarray, ids: np.ndarray, chunk: int) -> list[np.ndarray]:
    """Assert every level equals :class:`_ReferenceRule` chunk by chunk; the expected levels."""
    reference = _ReferenceRule(nuclei, ids)
    expected_levels = []
    for k, level in enumerate(levels):
        with dask.config.set(scheduler="sync"):
            drawn = level.compute()
        expected = np.zeros_like(drawn)
        for y0 in range(0, drawn.shape[0], chunk):
            for x0 in range(0, drawn.shape[1], chunk):
                window = expected[y0 : y0 + chunk, x0 : x0 + chunk]
                window[:] = reference.chunk(y0, x0, window.shape, 2**k)
        assert np.array_equal(drawn, expected), f"level {k}: {np.count_nonzero(drawn != expected)} pixels differ"
        expected_levels.append(expected)
    return expected_levels


class _ReferenceRule:
    """The labels rule as first written: scikit-image's fill per polygon, in row order, a dot when it draws nothing."""

    def __init__(self, nuclei: np.ndarray, ids: np.ndarray) -> None:
        largest = [max(shapely.get_parts(g), key=lambda p: p.area) for g in nuclei]
        self.rings = [np.asarray(p.exterior.coords) for p in largest]
        self.tree = shapely.STRtree([shapely.box(*p.bounds) for p in largest])
        self.ids = ids

    def chunk(self, y0: int, x0: int, shape: tuple[int, int], factor: int) -> np.ndarray:
        from skimage.draw import polygon

        height, width = shape
        canvas = np.zeros(shape, np.uint32)
        window = shapely.box(x0 * factor, y0 * factor, (x0 + width) * factor, (y0 + height) * factor)
        origin = np.array([x0, y0], float) + 0.5
        for index in np.sort(self.tree.query(window)):
            ring = self.rings[index] / factor - origin
            rows, cols = polygon(ring[:, 1], ring[:, 0], shape)
            if len(rows):
                canvas[rows, cols] = self.ids[index]
            else:
                x, y = np.clip(np.round(ring.mean(axis=0)).astype(int), 0, [width - 1, height - 1])
                canvas[y, x] = self.ids[index]
        return canvas


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


def test_an_empty_nucleus_draws_nothing() -> None:
    """An empty polygon (first, in the middle or last), a missing geometry or an empty MultiPolygon has no pixel:
    the others are drawn, under their own ids, as without it (also when a MultiPolygon's parts are drawn)."""
    nuclei = nuclei_tiles()[0].geometry.to_numpy()[:200]
    nuclei[50] = shapely.MultiPolygon([shapely.affinity.scale(nuclei[50], 0.5, 0.5), nuclei[50]])
    empty, missing, no_parts = shapely.Polygon(), None, shapely.MultiPolygon()
    with_empty = np.concatenate([[empty], nuclei[:100], [empty, missing, no_parts], nuclei[100:], [empty]])
    ids = np.arange(1, len(with_empty) + 1)
    kept = np.array([g is not None and not g.is_empty for g in with_empty])
    shape = tuple(int(v) + 8 for v in shapely.total_bounds(nuclei)[[3, 2]])
    with dask.config.set(scheduler="sync"):
        drawn = [lv.compute() for lv in nuclei_label_levels(with_empty, ids, shape, 128)]
        expected = [lv.compute() for lv in nuclei_label_levels(with_empty[kept], ids[kept], shape, 128)]
    for a, b in zip(drawn, expected, strict=True):
        assert np.array_equal(a, b)
    assert len(np.unique(drawn[0])) > 150


def test_pixel_centres_on_edges_and_vertices_follow_scikit_image() -> None:
    """Polygons whose edges and vertices fall exactly on pixel centres (at level 0 and, halved, at level 1): the
    cases the compiled fill hands back to scikit-image's own arithmetic (a crossing within its margin of a centre)."""
    rng = np.random.default_rng(7)
    shapes = []
    for k in range(300):
        x, y = 40 + 13 * (k % 30) + 0.5, 40 + 13 * (k // 30) + 0.5  # on a pixel centre (level 0: centre = i + 0.5)
        w, h = rng.integers(1, 9, 2)
        kind = k % 3
        if kind == 0:  # axis-aligned: vertical edges through pixel centres
            shapes.append(shapely.box(x, y, x + w, y + h))
        elif kind == 1:  # a triangle with a vertex on a centre and a 45-degree edge through centres
            shapes.append(shapely.Polygon([(x, y), (x + w, y + w), (x, y + w)]))
        else:  # integer corners: centres of level 1 (factor 2: centre = 2 i + 1)
            shapes.append(shapely.box(x - 0.5, y - 0.5, x - 0.5 + 2 * w, y - 0.5 + h))
    nuclei = np.array(shapes, dtype=object)
    ids = np.arange(1, len(nuclei) + 1)
    slide_shape, chunk = (240, 460), 128
    levels = nuclei_label_levels(nuclei, ids, slide_shape, chunk)
    _drawn_as_the_reference(levels, nuclei, ids, chunk)
