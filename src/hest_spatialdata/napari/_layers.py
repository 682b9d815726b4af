"""napari layers for the elements of a HEST SpatialData object.

Layer data tuples ``(data, kwargs, layer_type)`` in napari's (y, x) order, placed with the element's affine to the
chosen coordinate system, and helpers colouring spots by a gene and nuclei by class on any spots / nuclei layer
(ours or napari-spatialdata's). Absent elements are skipped: every element but ``he`` is optional.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from hest_spatialdata._constants import ATTRS_KEY, CoordinateSystems, Elements
from hest_spatialdata._expression import gene_values, genes_by_expression, most_expressed_gene, resolve_gene
from hest_spatialdata.views._palette import (
    GENE_COLORMAP,
    NUCLEUS_CLASS_COLORS,
    PALETTE,
    SPOTS_RING_WIDTH,
    TISSUE_COLOR,
    gene_scale,
    nucleus_color,
)

if TYPE_CHECKING:
    from pathlib import Path

    import anndata as ad
    import geopandas as gpd
    from napari.layers import Layer
    from spatialdata import SpatialData

LayerDataTuple = tuple[Any, dict[str, Any], str]
__all__ = [
    "NUCLEUS_CLASS_COLORS",
    "TISSUE_COLOR",
    "genes_by_expression",
    "hest_sample_layers",
    "most_expressed_gene",
    "sample_layers",
]

#: Up to this many nuclei, they are editable Shapes polygons; above, outlines drawn from a labels pyramid (napari
#: builds Shapes at ~0.5 ms per polygon, a labels pyramid in the time it takes to read the tiles on screen).
MAX_NUCLEI_POLYGONS = 2_000
#: Transcripts drawn: a uniform random subsample (whole Xenium runs hold tens of millions).
MAX_TRANSCRIPTS = 100_000
#: Contours are drawn simplified to this fraction of the slide's longer side (the store keeps every vertex): a
#: pixel of a 4k screen showing the whole slide.
CONTOUR_DISPLAY_TOLERANCE = 1 / 4000
TRANSCRIPTS_SUBSAMPLE = "transcripts (subsample)"
#: Names of our own layers: not an element's name, which napari-spatialdata reserves for the layers it links.
TISSUE_OUTLINE = "tissue outline"
NUCLEI_OUTLINES = "nuclei outlines"


def hest_sample_layers(
    hest_dir: str | Path,
    sample_id: str,
    *,
    coordinate_system: str = CoordinateSystems.GLOBAL,
    gene: str | None = None,
) -> list[LayerDataTuple]:
    """Layers of one sample of a HEST root, read lazily with :func:`hest_spatialdata.read_hest`.

    Parameters
    ----------
    hest_dir
        The HEST root.
    sample_id
        The sample id.
    coordinate_system
        ``"global"`` (level-0 pixels) or ``"microns"``.
    gene
        Gene colouring the spots (default: the most expressed).

    Returns
    -------
    napari layer data tuples, H&E first.
    """
    return sample_layers(read_sample(hest_dir, sample_id), coordinate_system=coordinate_system, gene=gene)


def read_sample(hest_dir: str | Path, sample_id: str) -> SpatialData:
    """:func:`hest_spatialdata.read_hest`, imported only when used (it pulls in spatialdata)."""
    from hest_spatialdata.readers.sample import read_hest

    return read_hest(hest_dir, sample_id)


def sample_layers(
    sdata: SpatialData,
    *,
    coordinate_system: str = CoordinateSystems.GLOBAL,
    gene: str | None = None,
    max_nuclei_polygons: int = MAX_NUCLEI_POLYGONS,
    max_transcripts: int = MAX_TRANSCRIPTS,
) -> list[LayerDataTuple]:
    """Layers of a HEST sample, bottom to top: H&E, tissue outline, spots, nuclei, transcripts.

    Parameters
    ----------
    sdata
        A HEST SpatialData object (from :func:`hest_spatialdata.read_hest` or a store).
    coordinate_system
        ``"global"`` (level-0 pixels) or ``"microns"``.
    gene
        Gene colouring the spots; the most expressed one by default.
    max_nuclei_polygons
        Above this many nuclei, draw centroids instead of polygons.
    max_transcripts
        Size of the random subsample of transcripts drawn.

    Returns
    -------
    napari layer data tuples; elements absent from ``sdata`` are skipped.
    """
    layers = []
    if Elements.HE in sdata.images:
        layers.append(he_layer(sdata, coordinate_system))
    if Elements.TISSUE in sdata.shapes:
        layers.append(tissue_layer(sdata, coordinate_system))
    if Elements.SPOTS in sdata.shapes:
        layers.append(spots_layer(sdata, coordinate_system, gene=gene))
    if Elements.NUCLEI in sdata.shapes:
        layers.append(nuclei_layer(sdata, coordinate_system, max_polygons=max_nuclei_polygons))
    if Elements.TRANSCRIPTS in sdata.points:
        layers.append(transcripts_layer(sdata, coordinate_system, n=max_transcripts))
    return layers


def use_compiled_triangulation() -> str:
    """Select napari's compiled ``bermuda`` triangulation for Shapes (napari's setting), when it is installed.

    napari's pure-Python triangulation takes ~70 s for a real 25k-vertex tissue contour; bermuda, under a second.

    Returns
    -------
    The triangulation backend in use.
    """
    from napari.settings import get_settings
    from napari.utils.triangulation_backend import TriangulationBackend

    experimental = get_settings().experimental
    try:
        import bermuda  # noqa: F401
    except ImportError:
        backend = experimental.triangulation_backend
        logging.getLogger(__name__).info("bermuda is not installed: napari triangulates Shapes with %s", backend)
        return str(experimental.triangulation_backend)
    if experimental.triangulation_backend != TriangulationBackend.bermuda:
        experimental.triangulation_backend = TriangulationBackend.bermuda
    return str(experimental.triangulation_backend)


def element_affine(element: Any, coordinate_system: str) -> np.ndarray:
    """The 3 x 3 (y, x) affine from the element's intrinsic frame to ``coordinate_system``."""
    from spatialdata.transformations import get_transformation

    transformation = get_transformation(element, to_coordinate_system=coordinate_system)
    return np.asarray(transformation.to_affine_matrix(input_axes=("y", "x"), output_axes=("y", "x")), float)


def he_layer(sdata: SpatialData, coordinate_system: str = CoordinateSystems.GLOBAL) -> LayerDataTuple:
    """The H&E pyramid as a multiscale RGB image layer (lazy: napari reads the tiles it shows)."""
    from spatialdata import get_pyramid_levels

    image = sdata.images[Elements.HE]
    levels = get_pyramid_levels(image, attr="data") if hasattr(image, "children") else [image.data]
    data = [level.transpose(1, 2, 0) for level in levels]  # (c, y, x) -> (y, x, c)
    kwargs = {
        "name": Elements.HE.value,
        "rgb": True,
        "multiscale": len(data) > 1,
        "affine": element_affine(image, coordinate_system),
        "metadata": _metadata(sdata, Elements.HE, coordinate_system),
    }
    return (data if len(data) > 1 else data[0], kwargs, "image")


def spots_layer(
    sdata: SpatialData, coordinate_system: str = CoordinateSystems.GLOBAL, *, gene: str | None = None
) -> LayerDataTuple:
    """Spots as points (circles, or squares for Xenium / Visium HD pseudo-spots) coloured by ``gene``."""
    spots = sdata.shapes[Elements.SPOTS]
    affine = element_affine(spots, coordinate_system)
    yx, diameters, square = _spot_geometry(spots)
    table = sdata.tables.get(Elements.TABLE)
    metadata = _metadata(sdata, Elements.SPOTS, coordinate_system) | {"indices": spots.index.to_list()}
    kwargs: dict[str, Any] = {
        "name": Elements.SPOTS.value,
        "size": diameters * _scale_factor(affine),
        "symbol": "square" if square else "disc",
        "affine": affine,
        "metadata": metadata,
    } | SPOTS_RINGS
    if table is not None and table.n_vars:
        metadata["hest_table"] = table
        gene = gene or most_expressed_gene(table)
        values = gene_values(table, gene, spots.index)
        kwargs |= {"features": pd.DataFrame({gene: values}), "border_color": values_to_rgba(values)}
    return (yx, kwargs, "points")


#: How the spots are drawn: rings of their colour (the border), transparent inside, so the H&E shows whole.
SPOTS_RINGS: dict[str, Any] = {
    "face_color": "transparent",
    "border_color": "white",
    "border_width": SPOTS_RING_WIDTH,
    "border_width_is_relative": True,
    "opacity": 1.0,
}


def draw_spots_as_rings(layer: Layer) -> None:
    """Draw a spots Points layer as rings, and keep them rings when a colour is given to their faces.

    napari-spatialdata's "View" widget colours spots by a gene through ``face_color``: each time the faces get a
    colour, it is moved to the rings and the faces made transparent again (the picker keeps working, the H&E stays
    visible inside the spots).
    """
    for name, value in SPOTS_RINGS.items():
        if name not in ("face_color", "border_color"):
            setattr(layer, name, value)
    _faces_to_rings(layer)
    layer.events.face_color.connect(lambda _event: _faces_to_rings(layer))


def _faces_to_rings(layer: Layer) -> None:
    faces = np.asarray(layer.face_color)
    if len(faces) and (faces[:, 3] > 0).any():
        layer.border_color = faces.copy()
        layer.face_color = SPOTS_RINGS["face_color"]  # emits face_color again: all transparent, nothing to move


def nuclei_layer(
    sdata: SpatialData, coordinate_system: str = CoordinateSystems.GLOBAL, *, max_polygons: int = MAX_NUCLEI_POLYGONS
) -> LayerDataTuple:
    """Nuclei outlined in the colour of their class, at any count.

    Up to ``max_polygons`` nuclei: Shapes polygons. Above: a labels layer of the outlines, drawn from the
    ``nuclei_labels`` pyramid when the store has it, else from the polygons rasterised lazily tile by tile (see
    :mod:`hest_spatialdata.readers.nuclei_labels`); its values are classes (hover shows the class).
    """
    nuclei = sdata.shapes[Elements.NUCLEI]
    classes = nucleus_classes(nuclei)
    if len(nuclei) > max_polygons:
        return nuclei_outlines_layer(sdata, coordinate_system)
    affine = element_affine(nuclei, coordinate_system)
    colors = category_rgba(classes, NUCLEUS_CLASS_COLORS)
    metadata = _metadata(sdata, Elements.NUCLEI, coordinate_system) | {"indices": nuclei.index.to_list()}
    polygons = [_ring_yx(polygon.exterior) for polygon in _largest_polygons(nuclei.geometry)]
    kwargs = {
        "name": NUCLEI_OUTLINES,
        "shape_type": "polygon",
        "edge_color": colors,
        "face_color": _with_alpha(colors, 0.25),
        "edge_width": max(1.0, 0.08 * float(np.median(np.sqrt(nuclei.geometry.area.to_numpy())))),
        "features": pd.DataFrame({"class": classes}),
        "affine": affine,
        "metadata": metadata,
    }
    return (polygons, kwargs, "shapes")


def nuclei_outlines_layer(sdata: SpatialData, coordinate_system: str = CoordinateSystems.GLOBAL) -> LayerDataTuple:
    """The nuclei as a multiscale labels layer of their outlines, valued and coloured by class (lazy)."""
    from hest_spatialdata.readers.nuclei_labels import class_outlines, label_ids

    nuclei = sdata.shapes[Elements.NUCLEI]
    classes = nucleus_classes(nuclei)
    levels, affine = nuclei_label_levels(sdata, coordinate_system)
    ids = label_ids(nuclei)
    label_classes = np.zeros(int(ids.max(initial=0)) + 1, np.uint8)  # label id -> class code + 1; 0 elsewhere
    label_classes[ids] = np.asarray(classes.codes) + 1
    outlines = [class_outlines(level, label_classes) for level in levels]
    names = [str(c) for c in classes.categories]
    kwargs = {
        "name": NUCLEI_OUTLINES,
        "multiscale": len(outlines) > 1,
        "colormap": class_colormap(names),
        "features": pd.DataFrame({"index": np.arange(len(names) + 1), "class": ["none", *names]}),
        "affine": affine,
        "metadata": _metadata(sdata, Elements.NUCLEI, coordinate_system) | {"classes": names},
    }
    return (outlines if len(outlines) > 1 else outlines[0], kwargs, "labels")


def class_colormap(names: list[str]) -> Any:
    """Label value ``k + 1`` in the colour of class ``names[k]``, 0 transparent.

    A cyclic colormap holding one colour per class (the values never exceed it, so nothing cycles): napari maps a
    ``DirectLabelColormap`` through a numba typed dict compiled afresh in every process (~0.7 s of CPU at the first
    open), a cyclic one through a cached function.
    """
    from napari.utils.colormaps import CyclicLabelColormap
    from napari.utils.colormaps.standardize_color import transform_color

    colors = np.vstack([np.zeros((1, 4), np.float32), transform_color([nucleus_color(n) for n in names] or ["gray"])])
    return CyclicLabelColormap(colors=colors, background_value=0)


def nuclei_label_levels(sdata: SpatialData, coordinate_system: str) -> tuple[list[Any], np.ndarray]:
    """The levels of ``nuclei_labels`` (rasterised lazily from ``nuclei`` when absent) and their affine."""
    from spatialdata import get_pyramid_levels

    from hest_spatialdata.readers._context import DEFAULT_CHUNK_SIZE
    from hest_spatialdata.readers.nuclei_labels import label_ids
    from hest_spatialdata.readers.nuclei_labels import nuclei_label_levels as rasterised_levels

    if Elements.NUCLEI_LABELS in sdata.labels:
        labels = sdata.labels[Elements.NUCLEI_LABELS]
        levels = get_pyramid_levels(labels, attr="data") if hasattr(labels, "children") else [labels.data]
        return levels, element_affine(labels, coordinate_system)
    nuclei = sdata.shapes[Elements.NUCLEI]
    levels = rasterised_levels(nuclei.geometry.to_numpy(), label_ids(nuclei), _slide_shape(sdata), DEFAULT_CHUNK_SIZE)
    return levels, element_affine(nuclei, coordinate_system)


def tissue_layer(sdata: SpatialData, coordinate_system: str = CoordinateSystems.GLOBAL) -> LayerDataTuple:
    """The tissue outline: every ring (holes included) as a path, since napari polygons cannot have holes."""
    tissue = sdata.shapes[Elements.TISSUE]
    affine = element_affine(tissue, coordinate_system)
    paths, tissue_ids = [], []
    tolerance = CONTOUR_DISPLAY_TOLERANCE * _extent(tissue)
    tissue_id = tissue["tissue_id"] if "tissue_id" in tissue.columns else pd.Series(tissue.index, index=tissue.index)
    for geom, tid in zip(tissue.geometry, tissue_id.to_numpy(), strict=True):
        for polygon in getattr(geom, "geoms", [geom]):
            for ring in (polygon.exterior, *polygon.interiors):
                paths.append(_ring_yx(shapely.simplify(ring, tolerance), closed=True))
                tissue_ids.append(tid)
    kwargs = {
        "name": TISSUE_OUTLINE,
        "shape_type": "path",
        "edge_color": TISSUE_COLOR,
        "edge_width": max(2.0, 0.002 * _extent(tissue)),
        "features": pd.DataFrame({"tissue_id": tissue_ids}),
        "affine": affine,
        "metadata": _metadata(sdata, Elements.TISSUE, coordinate_system),
    }
    return (paths, kwargs, "shapes")


def transcripts_layer(
    sdata: SpatialData, coordinate_system: str = CoordinateSystems.GLOBAL, *, n: int = MAX_TRANSCRIPTS, seed: int = 0
) -> LayerDataTuple:
    """A uniform random subsample of ``n`` transcripts, coloured by gene."""
    points = sdata.points[Elements.TRANSCRIPTS]
    affine = element_affine(points, coordinate_system)
    feature_key = points.attrs.get("spatialdata_attrs", {}).get("feature_key", "feature_name")
    columns = ["x", "y", *([feature_key] if feature_key in points.columns else [])]
    sample = subsample(points[columns], n, seed=seed)
    yx = sample[["y", "x"]].to_numpy(float)
    kwargs: dict[str, Any] = {
        "name": TRANSCRIPTS_SUBSAMPLE,
        "size": 1.5 * _scale_factor(affine) / _pixel_size_um(sdata),  # 1.5 µm dots
        "border_width": 0.0,
        "opacity": 0.7,
        "affine": affine,
        "metadata": _metadata(sdata, Elements.TRANSCRIPTS, coordinate_system) | {"n_shown": len(sample)},
    }
    if feature_key in sample.columns:
        genes = pd.Categorical(sample[feature_key].astype(str))
        kwargs |= {"features": pd.DataFrame({feature_key: genes}), "face_color": category_rgba(genes, {})}
    return (yx, kwargs, "points")


# --------------------------------------------------------------------------------------------- colours


def values_to_rgba(values: np.ndarray, colormap: str = GENE_COLORMAP) -> np.ndarray:
    """RGBA (n, 4) of gene counts on a napari colormap, on the robust scale of :func:`_palette.gene_scale`."""
    from napari.utils.colormaps import ensure_colormap

    scaled = gene_scale(values)
    return np.asarray(ensure_colormap(colormap).map(scaled), np.float32).reshape(-1, 4)


def category_rgba(categories: pd.Categorical | pd.Series, fixed: dict[str, str]) -> np.ndarray:
    """RGBA (n, 4) per category: ``fixed`` colours first, the tab20 palette for the others."""
    from napari.utils.colormaps.standardize_color import transform_color

    categorical = pd.Categorical(categories)
    others = iter(c for c in PALETTE * (1 + len(categorical.categories) // len(PALETTE)) if c not in fixed.values())
    lookup = {cat: fixed.get(str(cat)) or next(others) for cat in categorical.categories}
    palette = transform_color([lookup[cat] for cat in categorical.categories] or ["gray"])
    codes = np.asarray(categorical.codes)
    rgba = palette[np.clip(codes, 0, None)]
    rgba[codes < 0] = (0.5, 0.5, 0.5, 1.0)
    return rgba


def nucleus_classes(nuclei: gpd.GeoDataFrame) -> pd.Categorical:
    """The ``class`` column of the nuclei as a categorical (``"unknown"`` when the column is missing)."""
    if "class" not in nuclei.columns:
        return pd.Categorical(["unknown"] * len(nuclei))
    return pd.Categorical(nuclei["class"].astype(str))


def color_spots_by_gene(layer: Layer, gene: str, *, colormap: str = GENE_COLORMAP) -> str:
    """Colour a spots layer by a gene, in place (its rings: see :func:`draw_spots_as_rings`).

    Works on the layers of this package and on napari-spatialdata's (both keep the spot ids in
    ``metadata["indices"]``).

    Parameters
    ----------
    layer
        A napari Points (or Shapes) layer of the ``spots`` element.
    gene
        A var name, or an original gene name of ``var["gene_name"]``.
    colormap
        A napari colormap name.

    Returns
    -------
    The var name used.
    """
    table = spots_table(layer)
    if table is None:
        raise ValueError(f"layer {layer.name!r} has no expression table")
    gene = resolve_gene(table, gene)
    values = gene_values(table, gene, layer.metadata["indices"])
    layer.features = pd.DataFrame({gene: values})
    layer.border_color = values_to_rgba(values, colormap)  # the rings (see draw_spots_as_rings)
    return gene


def spots_table(layer: Layer) -> ad.AnnData | None:
    """The expression table behind a spots layer (ours: ``metadata["hest_table"]``; napari-spatialdata's: sdata)."""
    metadata = layer.metadata
    if metadata.get("hest_table") is not None:
        return metadata["hest_table"]
    sdata = metadata.get("sdata")
    if sdata is not None and Elements.TABLE in sdata.tables:
        return sdata.tables[Elements.TABLE]
    return None


# --------------------------------------------------------------------------------------------- helpers


def subsample(points: Any, n: int, *, seed: int = 0) -> pd.DataFrame:
    """A uniform random subsample of about ``n`` rows of a dask DataFrame, read partition by partition."""
    total = int(points.map_partitions(len).compute().sum())
    if total <= n:
        return points.compute()
    return points.sample(frac=n / total, random_state=seed).compute()


def _metadata(sdata: SpatialData, element: str, coordinate_system: str) -> dict[str, Any]:
    hest = sdata.attrs.get(ATTRS_KEY, {})
    return {
        "hest": {"sample_id": hest.get("sample_id"), "element": str(element), "coordinate_system": coordinate_system}
    }


def _spot_geometry(spots: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray, bool]:
    """Centres (y, x), diameters (or square sides) and whether the spots are squares."""
    geometry = spots.geometry
    if (geometry.geom_type == "Point").all():
        yx = np.column_stack([geometry.y.to_numpy(), geometry.x.to_numpy()])
        return yx, 2 * spots["radius"].to_numpy(float), False
    centroids = geometry.centroid
    yx = np.column_stack([centroids.y.to_numpy(), centroids.x.to_numpy()])
    return yx, np.sqrt(geometry.area.to_numpy()), True


def _scale_factor(affine: np.ndarray) -> float:
    # napari draws a point's size in world units, without the layer's affine (napari-spatialdata scales it the same way)
    return float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))


def _pixel_size_um(sdata: SpatialData) -> float:
    value = sdata.attrs.get(ATTRS_KEY, {}).get("pixel_size_um")
    return float(value) if value else 1.0


def _slide_shape(sdata: SpatialData) -> tuple[int, int]:
    """Level-0 ``(height, width)``: of the H&E, else from ``attrs["hest"]``, else the nuclei's extent."""
    if Elements.HE in sdata.images:
        image = sdata.images[Elements.HE]
        level = image["scale0"]["image"] if hasattr(image, "children") else image
        return int(level.shape[-2]), int(level.shape[-1])
    shape = sdata.attrs.get(ATTRS_KEY, {}).get("slide_shape")
    if shape:
        return int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = sdata.shapes[Elements.NUCLEI].total_bounds
    return int(np.ceil(y1)) + 1, int(np.ceil(x1)) + 1


def _extent(shapes: gpd.GeoDataFrame) -> float:
    x0, y0, x1, y1 = shapes.total_bounds if len(shapes) else (0.0, 0.0, 1.0, 1.0)
    return float(max(x1 - x0, y1 - y0))


def _ring_yx(ring: Any, *, closed: bool = False) -> np.ndarray:
    xy = np.asarray(ring.coords)[:, :2]
    if not closed:
        xy = xy[:-1]  # shapely repeats the first vertex; napari closes polygons itself
    return xy[:, ::-1].astype(float)


def _largest_polygons(geometry: gpd.GeoSeries) -> list[Any]:
    return [geom if geom.geom_type == "Polygon" else max(geom.geoms, key=lambda g: g.area) for geom in geometry]


def _with_alpha(rgba: np.ndarray, alpha: float) -> np.ndarray:
    out = np.array(rgba, np.float32, copy=True)
    out[:, 3] = alpha
    return out
