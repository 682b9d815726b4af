"""What the sample browser lists: the samples of a local HEST root and/or the hub's catalog, and their thumbnails.

No Qt here, so it can be tested and reused without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.roots.samples import list_sample_ids
from hest_spatialdata.source import filters as filters_module
from hest_spatialdata.source.layout import PARTS, Part, natural_key
from hest_spatialdata.source.metadata import read_metadata, technology_name

#: Columns of a browser catalog (index: sample id).
COLUMNS = ("organ", "species", "technology", "oncotree_code", "local")
#: Columns the browser filters on.
FILTERS = ("organ", "species", "technology")
THUMBNAIL_SIDE = 256


def local_catalog(hest_dir: str | Path) -> pd.DataFrame:
    """The samples of a HEST root that have a metadata JSON, described by it.

    Parameters
    ----------
    hest_dir
        A HEST root.

    Returns
    -------
    One row per sample (index: id) with :data:`COLUMNS`; ``local`` is true.
    """
    root = Path(hest_dir)
    rows = {}
    for sample_id in list_sample_ids(root):
        path = PARTS[Part.METADATA].path(root, sample_id)
        if not path.is_file():
            continue
        try:
            meta = read_metadata(path, sample_id)
        except HestInputError:
            continue
        rows[sample_id] = {**{key: meta.get(key) for key in ("organ", "species", "oncotree_code")}}
        rows[sample_id]["technology"] = technology_label(meta.get("st_technology"))
    return _frame(rows, local=True)


def store_catalog(folder: str | Path) -> pd.DataFrame:
    """The converted stores (``*.zarr`` of this package) in a folder or a URL, described by their ``attrs["hest"]``.

    Returns
    -------
    One row per store (index: sample id) with :data:`COLUMNS` (``local`` true) and ``store``, the store's path.
    """
    from hest_spatialdata.cohort._table import cohort_table
    from hest_spatialdata.storage.locations import list_stores, locate
    from hest_spatialdata.storage.store import store_attrs

    location = locate(folder)
    paths = [p for p in list_stores(location) if store_attrs(p) is not None] if location.is_dir() else []
    try:
        table = cohort_table(paths, {})
    except HestInputError:  # two stores of one sample: list none rather than guess
        table = cohort_table([], {})
    rows = {
        str(sample_id): {
            "organ": row["organ"],
            "species": row["species"],
            "oncotree_code": row["oncotree_code"],
            "technology": technology_label(row["technology"]),
        }  # fmt: skip
        for sample_id, row in table.iterrows()
    }
    frame = _frame(rows, local=True)
    frame["store"] = table["path"].reindex(frame.index).astype(object)
    return frame


def hub_catalog(**kwargs: Any) -> pd.DataFrame:
    """The HEST-1k catalog from the hub (:func:`hest_spatialdata.roots.hub.catalog`), in the browser's columns.

    Parameters
    ----------
    **kwargs
        Passed to :func:`hest_spatialdata.roots.hub.catalog` (``source``, ``token``, ``cache_dir``).

    Returns
    -------
    One row per sample (index: id) with :data:`COLUMNS`; ``local`` is false.
    """
    from hest_spatialdata.roots.hub import catalog

    frame = catalog(**kwargs)
    return catalog_from_frame(frame)


def catalog_from_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A HEST catalog CSV as read by ``metadata.read_catalog`` (``id``, ``organ``, ``st_technology`` ...) → browser."""
    raw = frame.get("st_technology", frame.get("technology", pd.Series(None, index=frame.index)))
    rows = {
        str(sample_id): {
            "organ": _text(frame.get("organ"), i),
            "species": _text(frame.get("species"), i),
            "oncotree_code": _text(frame.get("oncotree_code"), i),
            "technology": technology_label(raw.iloc[i]),
        }
        for i, sample_id in enumerate(frame["id"])
    }
    return _frame(rows, local=False)


def merge_catalogs(local: pd.DataFrame | None, hub: pd.DataFrame | None) -> pd.DataFrame:
    """Hub rows, with the local samples' descriptions and ``local=True`` where a sample is in the HEST root."""
    frames = [f for f in (local, hub) if f is not None]
    if not frames:
        return _frame({}, local=False)
    merged = pd.concat(frames)
    merged = merged[~merged.index.duplicated(keep="first")]  # local first: its metadata JSON is the sample's own
    return merged.loc[sorted(merged.index, key=natural_key)]


def filter_catalog(catalog: pd.DataFrame, **filters: str | None) -> pd.DataFrame:
    """Rows matching the browser's filters (``None`` or ``""``: any), with the matching of ``hest-to-sdata list``.

    See :func:`hest_spatialdata.source.filters.record_matches`.
    """
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise TypeError(f"unknown filter {unknown[0]!r}; known: {', '.join(FILTERS)}")
    return filters_module.filter_catalog(catalog, **{name: value for name, value in filters.items() if value})


def filter_values(catalog: pd.DataFrame, column: str) -> list[str]:
    """The distinct non-empty values of a column, sorted."""
    return sorted({str(v) for v in catalog[column].dropna() if str(v).strip()})


def thumbnail(hest_dir: str | Path, sample_id: str, side: int = THUMBNAIL_SIDE) -> np.ndarray | None:
    """A small RGB preview of a local sample: HEST's ``thumbnails/`` JPEG, else the slide's smallest pyramid level.

    Parameters
    ----------
    hest_dir
        The HEST root.
    sample_id
        The sample id.
    side
        Longest edge of the result in pixels.

    Returns
    -------
    An (h, w, 3) uint8 array, or ``None`` if the sample has neither file.
    """
    from PIL import Image

    root = Path(hest_dir)
    jpegs = [path for path in PARTS[Part.THUMBNAIL].paths(root, sample_id) if path.is_file()]
    if jpegs:
        image = Image.open(jpegs[0]).convert("RGB")
    else:
        level = _smallest_level(root, sample_id)
        if level is None:
            return None
        image = Image.fromarray(level)
    image.thumbnail((side, side))
    return np.asarray(image)


def technology_label(raw: Any) -> str | None:
    """Normalised ``st_technology`` (``"Visium HD 3'"`` → ``"Visium HD"``); unknown values as given."""
    if raw is None or (isinstance(raw, float) and np.isnan(raw)):
        return None
    return technology_name(raw) or None


def _smallest_level(root: Path, sample_id: str) -> np.ndarray | None:
    import tifffile

    for path in PARTS[Part.WSI].paths(root, sample_id):
        if path.is_file():
            with tifffile.TiffFile(path) as tif:
                pages = [p for p in tif.pages if p.shape[-1] in (3, 4) and len(p.shape) == 3]
                smallest = min(pages, key=lambda p: p.shape[0] * p.shape[1]) if pages else tif.pages[0]
                return np.asarray(smallest.asarray())[..., :3]
    return None


def _frame(rows: dict[str, dict[str, Any]], *, local: bool) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=[c for c in COLUMNS if c != "local"], dtype=object)
    frame["local"] = local
    frame.index.name = "id"
    return frame


def _text(column: pd.Series | None, i: int) -> str | None:
    if column is None:
        return None
    value = column.iloc[i]
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
