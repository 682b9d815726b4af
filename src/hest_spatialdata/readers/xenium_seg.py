"""``xenium_seg/``: Xenium cell and nucleus boundaries as ``xenium_cells`` and ``xenium_nuclei``.

The files are ``{id}_xenium_{cell,nucleus}_seg.parquet``.
GeoParquet of the 10x boundaries warped onto the H&E (level-0 px), indexed by the Xenium ``cell_id``, whose type
depends on the Xenium software version (int, str or bytes such as ``b'aagigajm-1'``, HEST issue #109). The ids are
normalised to ``str`` (bytes decoded) the same way for the shapes, the transcripts' instance key and the cell
table, so the three join. The ``.geojson.zip`` written next to it holds ten arbitrary shards and no cell ids (HEST
issue #88); it is read only when the parquet is absent.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from spatialdata.models import ShapesModel

from hest_spatialdata._constants import Elements
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import check_extent_on_slide, check_polygons, check_unique, reason, warn
from hest_spatialdata.readers._context import SampleContext

#: The instance key of ``transcripts`` and ``xenium_cell_table``.
CELL_ID_KEY = "cell_id"
#: ``cell_id`` of transcripts assigned to no cell (10x writes ``"UNASSIGNED"``, or ``-1`` in XOA 1.x).
UNASSIGNED = "UNASSIGNED"


def read(path: Path, ctx: SampleContext, elements: frozenset[Elements]) -> dict[str, gpd.GeoDataFrame]:
    """Reader contract (see :mod:`hest_spatialdata.readers`): the boundaries, under the element name wanted.

    The same reader serves ``xenium_cells`` and ``xenium_nuclei`` (the registry gives each part its element).
    """
    return {element.value: boundaries(path, ctx) for element in elements}


def boundaries(path: Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    """:func:`read_xenium_shapes`, read once per sample and file (the cell table reuses the cells)."""
    key = f"xenium_seg:{path}"
    if key not in ctx.shared:
        ctx.shared[key] = read_xenium_shapes(path, ctx)
    return ctx.shared[key]


# --------------------------------------------------------------------------------------------- cell ids


def cell_id_strings(values: Any) -> pa.Array:
    """Xenium cell ids as strings, whatever their stored type, so that shapes, transcripts and tables join.

    Integers become their decimal text and negative ones (XOA 1.x's ``-1``) :data:`UNASSIGNED`; bytes are decoded
    as UTF-8 (``b'aagigajm-1'`` → ``'aagigajm-1'``, never ``"b'...'"``); strings are kept; missing ids are
    :data:`UNASSIGNED`.

    Parameters
    ----------
    values
        A pyarrow array, or anything :func:`pyarrow.array` accepts (a pandas Index or Series, a list).

    Returns
    -------
    A pyarrow string array.
    """
    arr = as_arrow(values)
    if pa.types.is_dictionary(arr.type):
        return pc.take(cell_id_strings(arr.dictionary), arr.indices)
    if pa.types.is_floating(arr.type):  # integer ids turned float by a pandas round trip with missing values
        arr = pc.cast(arr, pa.int64())
    if pa.types.is_integer(arr.type):
        text = pc.if_else(pc.less(arr, 0), pa.scalar(UNASSIGNED), pc.cast(arr, pa.string()))
    elif any(check(arr.type) for check in (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_string,
                                            pa.types.is_large_string)):  # fmt: skip
        text = pc.cast(arr, pa.string())  # bytes are decoded as UTF-8
    elif pa.types.is_null(arr.type):
        text = pa.nulls(len(arr), pa.string())
    else:
        raise TypeError(f"cell ids of type {arr.type} are neither integers nor strings")
    return pc.fill_null(text, UNASSIGNED)


def cell_id_column(values: Any, index: pd.Index) -> pd.Series:
    """:func:`cell_id_strings` as a column of a frame with ``index``, the strings kept in Arrow (``string[pyarrow]``).

    A transcripts partition holds millions of ids: as Python objects they would cost about 60 bytes each, in Arrow
    their bytes once; parquet stores both the same way.
    """
    return pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([cell_id_strings(values)])), index=index)


def as_arrow(values: Any) -> pa.Array:
    """One contiguous pyarrow array from an array, a chunked array or anything :func:`pyarrow.array` accepts."""
    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


# --------------------------------------------------------------------------------------------- boundaries


def read_xenium_shapes(path: str | Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    """Read Xenium cell or nucleus boundaries (``xenium_seg/``) as shapes indexed by the cell id as ``str``.

    Parameters
    ----------
    path
        ``{id}_xenium_{cell,nucleus}_seg.parquet`` (GeoParquet, index = Xenium ``cell_id``), or the
        ``.geojson.zip`` fallback, whose polygons carry no cell id: they are indexed ``"geojson-{row}"`` so that they
        can never be mistaken for, or joined to, Xenium cells.
    ctx
        The sample's context.

    Returns
    -------
    Polygons in level-0 H&E pixels, in the ``global`` and ``microns`` coordinate systems.
    """
    path = Path(path)
    gdf = _read_seg_geojson_zip(path, ctx) if path.name.endswith(".zip") else _read_seg_parquet(path, ctx)
    _check_boundaries(gdf, path, ctx)
    return ShapesModel.parse(gdf, transformations=ctx.transformations())


def _read_seg_parquet(path: Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    try:
        source = gpd.read_parquet(path)
    except Exception as e:  # pyarrow/geopandas raise ArrowInvalid, OSError, ValueError ... on bad files
        raise HestInputError(ctx.sample_id, path, f"Xenium segmentation GeoParquet unreadable ({reason(e)})") from e
    ids = source[CELL_ID_KEY] if CELL_ID_KEY in source.columns and isinstance(source.index, pd.RangeIndex) else None
    try:
        index = pd.Index(cell_id_strings(source.index if ids is None else ids).to_pandas(), dtype=str)
    except (TypeError, pa.ArrowInvalid) as e:
        raise HestInputError(ctx.sample_id, path, f"cell ids unreadable ({reason(e)})") from e
    check_unique(index, ctx, path, what="cell ids")
    return gpd.GeoDataFrame(geometry=gpd.GeoSeries(source.geometry.to_numpy(), index=index))


def _read_seg_geojson_zip(path: Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    try:
        with zipfile.ZipFile(path) as archive:
            member = next(n for n in archive.namelist() if n.endswith(".geojson"))
            features = json.loads(archive.read(member))
    except (zipfile.BadZipFile, StopIteration, OSError, ValueError) as e:
        raise HestInputError(ctx.sample_id, path, f"zipped Xenium GeoJSON unreadable ({reason(e)})") from e
    if isinstance(features, dict):
        features = features.get("features", [])
    rings = [np.asarray(polygon[0], dtype=np.float64) for f in _by_shard(features) for polygon in _polygons_of(f)]
    if not rings:
        raise HestInputError(ctx.sample_id, path, "zipped Xenium GeoJSON holds no polygon")
    lengths = np.array([len(r) for r in rings])
    geometry = shapely.from_ragged_array(
        shapely.GeometryType.POLYGON,
        np.concatenate(rings),
        (np.concatenate([[0], np.cumsum(lengths)]), np.arange(len(rings) + 1)),
    )
    index = pd.Index([f"geojson-{i}" for i in range(len(rings))], dtype=str)
    warn(ctx, path, "no GeoParquet: boundaries read from the GeoJSON shards, which carry no Xenium cell ids")
    return gpd.GeoDataFrame(geometry=gpd.GeoSeries(geometry, index=index))


def _by_shard(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # HEST's write_geojson(chunk=True) splits the rows in order into shards named "0".."9"
    def key(feature: dict[str, Any]) -> tuple[int, str]:
        name = str(feature.get("properties", {}).get("classification", {}).get("name", ""))
        return (int(name), "") if name.isdigit() else (1 << 30, name)

    return sorted(features, key=key)


def _polygons_of(feature: dict[str, Any]) -> list[Any]:
    geometry = feature.get("geometry") or {}
    if geometry.get("type") == "Polygon":
        return [geometry["coordinates"]]
    return geometry.get("coordinates", []) if geometry.get("type") == "MultiPolygon" else []


def _check_boundaries(gdf: gpd.GeoDataFrame, path: Path, ctx: SampleContext) -> None:
    check_polygons(gdf.geometry.to_numpy(), ctx, path, what="Xenium boundaries")
    if len(gdf):
        x0, y0, x1, y1 = gdf.total_bounds
        check_extent_on_slide((x0, y0), (x1, y1), ctx, path, what="Xenium boundaries")
