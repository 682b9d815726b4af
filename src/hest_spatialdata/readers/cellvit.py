"""``cellvit_seg/``: the CellViT nuclei of a sample as the ``nuclei`` shapes element.

HEST ships the same nuclei twice (``docs/hest_format.md`` section 5.1):

- ``{id}_cellvit_seg.parquet``: a GeoParquet with ``geometry`` (Polygon, level-0 px), ``class`` and ``cell_id``
  (``arange``), written by HEST as ``read_gdf(geojson).to_parquet()``;
- ``{id}_cellvit_seg.geojson.zip``: a QuPath-style GeoJSON, i.e. a top-level JSON *list* with one Feature per
  class whose MultiPolygon holds single-ring polygons and whose ``properties.classification.name`` is the class.
  The June 2024 release named the zip ``{id}_cellvit_seg.zip``; an unzipped ``.geojson`` is read too.

Both give the same element: polygons in level-0 px, a categorical ``class`` column and the index ``cell_id``
(for GeoJSON, ``arange`` in file order, as HEST's ``read_gdf`` numbers them). Samples hold ~500k nuclei, so
the polygons are built in one vectorised call from flat coordinate arrays, never one Python object at a time.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from spatialdata.models import ShapesModel

from hest_spatialdata._constants import Elements
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import check_geometries_on_slide, check_polygons, check_unique
from hest_spatialdata.readers._context import SampleContext

CLASS_COLUMN = "class"
INDEX_NAME = "cell_id"
#: How far (px) a nucleus traced on the slide border may reach beyond it before the file is rejected.
EDGE_TOLERANCE_PX = 2.0

_WHITESPACE = re.compile(r"\s*")


def read(path: Path, ctx: SampleContext, elements: frozenset[Elements]) -> dict[str, Any]:
    """Reader contract (see :mod:`hest_spatialdata.readers`): ``nuclei`` and ``nuclei_labels`` from ``cellvit_seg/``.

    ``nuclei_labels`` (:mod:`hest_spatialdata.readers.nuclei_labels`) is the ``nuclei`` polygons rasterised lazily.
    """
    from hest_spatialdata.readers.nuclei_labels import rasterise_nuclei

    nuclei = read_cellvit(path, ctx)
    found: dict[str, Any] = {}
    if Elements.NUCLEI in elements:
        found[Elements.NUCLEI.value] = nuclei
    if Elements.NUCLEI_LABELS in elements:
        found[Elements.NUCLEI_LABELS.value] = rasterise_nuclei(nuclei, ctx)
    return found


def read_cellvit(path: str | Path, ctx: SampleContext, *, default_class: str | None = None) -> gpd.GeoDataFrame:
    """Read a sample's CellViT nuclei as a ``nuclei`` shapes element.

    Parameters
    ----------
    path
        ``cellvit_seg/{id}_cellvit_seg.parquet`` (preferred), ``.geojson.zip``, ``.geojson`` or the legacy
        ``{id}_cellvit_seg.zip``.
    ctx
        The sample's context (slide size for the bounds check, pixel size for ``microns``).
    default_class
        The class of a GeoJSON Feature without one (any GeoJSON of polygons, e.g. a segmentation given to
        ``hest-to-sdata import``); ``None``: a Feature without a class is an error (HEST's files always have one).

    Returns
    -------
    Polygons in level-0 px with a categorical ``class`` column, indexed by ``cell_id``, in the ``global`` and
    ``microns`` coordinate systems.

    Raises
    ------
    HestInputError
        If the file is missing, unreadable or truncated, lacks classes, holds non-polygons or duplicate ids, or
        if nuclei lie off the slide.
    """
    path = Path(path)
    if not path.is_file():
        raise HestInputError(ctx.sample_id, path, "CellViT segmentation not found")
    name = path.name.lower()
    if name.endswith(".parquet"):
        nuclei = _read_parquet(path, path, ctx)
    elif name.endswith(".zip"):
        nuclei = _read_zip(path, ctx)
    elif name.endswith((".geojson", ".json")):
        nuclei = _from_geojson_text(_read_text(path, ctx), path, ctx, default_class)
    else:
        raise HestInputError(
            ctx.sample_id, path, "unknown CellViT file type (expected .parquet, .geojson.zip, .geojson)"
        )
    check_geometries_on_slide(
        nuclei.geometry.to_numpy(), ctx, path, what="nuclei (polygon bounds)", tolerance_px=EDGE_TOLERANCE_PX
    )
    return ShapesModel.parse(nuclei, transformations=ctx.transformations())


# --------------------------------------------------------------------------------------------- GeoParquet


def _read_parquet(source: str | Path | io.BytesIO, path: Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    try:
        frame = gpd.read_parquet(source)
    except Exception as e:  # pyarrow / geopandas raise ArrowInvalid, OSError, ValueError ... on bad files
        raise HestInputError(
            ctx.sample_id, path, f"CellViT GeoParquet unreadable or truncated ({type(e).__name__}: {e})"
        ) from e
    if CLASS_COLUMN not in frame.columns:
        raise HestInputError(ctx.sample_id, path, f"CellViT GeoParquet has no {CLASS_COLUMN!r} column")
    if INDEX_NAME in frame.columns:
        frame = frame.set_index(INDEX_NAME)
    return _checked_nuclei(frame, path, ctx)


def _checked_nuclei(frame: gpd.GeoDataFrame, path: Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    check_polygons(frame.geometry.to_numpy(), ctx, path, what="nuclei")
    check_unique(frame.index, ctx, path, what=f"{INDEX_NAME} values")
    frame = frame.copy()
    frame[CLASS_COLUMN] = frame[CLASS_COLUMN].astype("category")
    frame.index.name = INDEX_NAME
    return frame


# --------------------------------------------------------------------------------------------- GeoJSON


def _read_zip(path: Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    try:
        with zipfile.ZipFile(path) as archive:
            member = _zip_member(archive, path, ctx)
            data = archive.read(member)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise HestInputError(ctx.sample_id, path, f"CellViT zip unreadable or truncated ({e})") from e
    if member.lower().endswith(".parquet"):
        return _read_parquet(io.BytesIO(data), path, ctx)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise HestInputError(ctx.sample_id, path, f"{member} in the zip is not UTF-8 text ({e})") from e
    del data  # the raw bytes are as large as the text: free them before parsing
    return _from_geojson_text(text, path, ctx)


def _zip_member(archive: zipfile.ZipFile, path: Path, ctx: SampleContext) -> str:
    """The segmentation inside the zip: ``{stem}.geojson`` if present, else its only GeoJSON (or GeoParquet)."""
    names = [n for n in archive.namelist() if not n.endswith("/") and not Path(n).name.startswith(".")]
    stem = path.name[: -len(".zip")]  # {id}_cellvit_seg.geojson, or {id}_cellvit_seg for the legacy name
    preferred = [n for n in names if Path(n).name in (stem, f"{stem}.geojson")]
    if preferred:
        return preferred[0]
    for suffixes in ((".geojson", ".json"), (".parquet",)):
        found = [n for n in names if n.lower().endswith(suffixes)]
        if len(found) == 1:
            return found[0]
    raise HestInputError(ctx.sample_id, path, f"zip holds no single CellViT GeoJSON or GeoParquet (members: {names})")


def _read_text(path: Path, ctx: SampleContext) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise HestInputError(ctx.sample_id, path, f"CellViT GeoJSON unreadable ({e})") from e


@dataclass
class _FlatPolygons:
    """Polygons of one class as flat arrays, the layout of ``shapely.from_ragged_array``."""

    name: str
    coords: np.ndarray  # (n_vertices * 2,) x, y interleaved
    vertices_per_ring: np.ndarray
    rings_per_polygon: np.ndarray


def _from_geojson_text(text: str, path: Path, ctx: SampleContext, default_class: str | None = None) -> gpd.GeoDataFrame:
    try:
        parts = [_flatten_feature(feature, default_class) for feature in iter_features(text)]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise HestInputError(
            ctx.sample_id, path, f"CellViT GeoJSON invalid or truncated ({type(e).__name__}: {e})"
        ) from e
    return _checked_nuclei(_nuclei_from_flat(parts, path, ctx), path, ctx)


def _nuclei_from_flat(parts: list[_FlatPolygons], path: Path, ctx: SampleContext) -> gpd.GeoDataFrame:
    """Build every polygon in one ``shapely.from_ragged_array`` call; index ``arange`` in file order."""
    counts = np.array([len(p.rings_per_polygon) for p in parts], dtype=np.int64)
    vertices = np.concatenate([p.vertices_per_ring for p in parts]) if parts else np.zeros(0, np.int64)
    rings = np.concatenate([p.rings_per_polygon for p in parts]) if parts else np.zeros(0, np.int64)
    coords = np.concatenate([p.coords for p in parts]) if parts else np.zeros(0)
    ring_offsets = np.concatenate([[0], np.cumsum(vertices)])
    polygon_offsets = np.concatenate([[0], np.cumsum(rings)])
    try:
        geometry = shapely.from_ragged_array(
            shapely.GeometryType.POLYGON, coords.reshape(-1, 2), (ring_offsets, polygon_offsets)
        )
    except (ValueError, shapely.errors.GEOSException) as e:
        raise HestInputError(ctx.sample_id, path, f"CellViT GeoJSON holds an invalid ring ({e})") from e
    classes = pd.Categorical(np.repeat(np.array([p.name for p in parts], dtype=object), counts))
    index = pd.Index(np.arange(len(geometry), dtype=np.int64), name=INDEX_NAME)
    return gpd.GeoDataFrame({CLASS_COLUMN: classes}, geometry=geometry, index=index)


def _flatten_feature(feature: dict[str, Any], default_class: str | None = None) -> _FlatPolygons:
    geometry = feature["geometry"]
    kind, coordinates = geometry["type"], geometry["coordinates"]
    if kind == "MultiPolygon":
        polygons = coordinates
    elif kind == "Polygon":
        polygons = [coordinates]
    else:
        raise ValueError(f"unsupported geometry type {kind!r} (expected MultiPolygon or Polygon)")
    # map/chain iterate in C: no Python-level loop per polygon or vertex
    rings = list(chain.from_iterable(polygons))
    vertices_per_ring = np.fromiter(map(len, rings), np.int64, len(rings))
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), np.float64)
    if coords.size != 2 * vertices_per_ring.sum():
        raise ValueError("coordinates must be (x, y) pairs")
    return _FlatPolygons(
        name=_class_name(feature, default_class),
        coords=coords,
        vertices_per_ring=vertices_per_ring,
        rings_per_polygon=np.fromiter(map(len, polygons), np.int64, len(polygons)),
    )


def _class_name(feature: dict[str, Any], default_class: str | None = None) -> str:
    properties = feature.get("properties") or {}
    classification = properties.get("classification")
    name = classification.get("name") if isinstance(classification, dict) else properties.get(CLASS_COLUMN)
    name = default_class if name is None else name
    if name is None:
        raise ValueError("a Feature has no properties.classification.name (the nucleus class)")
    return str(name)


def iter_features(text: str) -> Iterator[dict[str, Any]]:
    """Features of a GeoJSON text: a QuPath-style top-level list, a FeatureCollection or a single Feature.

    A top-level list is decoded one element at a time, so only one class's Python objects exist at once
    (decoding all of a 500k-nuclei file at once takes several GB).
    """
    start = _WHITESPACE.match(text).end()
    if not text.startswith("[", start):
        document = json.loads(text)
        if document.get("type") == "FeatureCollection":
            yield from document["features"]
        elif document.get("type") == "Feature":
            yield document
        else:
            raise ValueError(
                f"expected a list of Features, a FeatureCollection or a Feature, got {document.get('type')!r}"
            )
        return
    decoder = json.JSONDecoder()
    pos = _WHITESPACE.match(text, start + 1).end()
    if text.startswith("]", pos):
        return
    while True:
        feature, pos = decoder.raw_decode(text, pos)
        yield feature
        pos = _WHITESPACE.match(text, pos).end()
        if text.startswith(",", pos):
            pos = _WHITESPACE.match(text, pos + 1).end()
        elif text.startswith("]", pos):
            return
        else:
            raise ValueError(f"expected ',' or ']' at character {pos} (file truncated?)")
