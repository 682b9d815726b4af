"""The cohort table: one row per store, from each store's ``attrs["hest"]`` and element sizes, without spatialdata.

Everything here reads JSON and Parquet footers only, so listing 1,000 stores costs milliseconds per store.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hest_spatialdata._constants import Elements
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.source.filters import normalise_filters, record_matches
from hest_spatialdata.source.metadata import nan_to_none
from hest_spatialdata.storage.locations import is_url, list_stores, locate, read_json
from hest_spatialdata.storage.store import store_attrs

if TYPE_CHECKING:
    from upath import UPath

#: Columns of :attr:`Cohort.table`, in order (index: ``sample_id``).
TABLE_COLUMNS = [
    "organ",
    "technology",
    "species",
    "oncotree_code",
    "disease_state",
    "patient",
    "pixel_size_um",
    "n_spots",
    "n_genes",
    "n_nuclei",
    "n_cells",
    "path",
]
#: Read block of a remote Parquet footer (bytes).
FOOTER_BLOCK = 64 * 1024
#: Shapes elements counted in the table: column -> element.
_COUNTED_SHAPES = {"n_spots": Elements.SPOTS, "n_nuclei": Elements.NUCLEI, "n_cells": Elements.XENIUM_CELLS}


def store_paths(
    source: str | Path | UPath | Iterable[str | Path | UPath], storage_options: Mapping[str, Any] | None = None
) -> list[Path | UPath]:
    """The stores named by ``source``: a folder of stores, a glob pattern, one store, or a list of store paths.

    Any of them may be a URL (``s3://bucket/prefix``), read with ``storage_options``. Whether each is a store of
    this package is checked by :func:`cohort_table`, which reads their attributes anyway.

    Raises
    ------
    HestInputError
        For a source naming no store.
    """
    if isinstance(source, str | Path) or is_url(source):
        location = locate(source, storage_options)
        if glob.has_magic(str(source)):
            paths = _glob(location, str(source), storage_options)
        elif store_attrs(location) is not None:
            paths = [location]
        elif location.is_dir():
            paths = list_stores(location)
        else:
            raise HestInputError(None, source, "no such folder of stores, store or glob")
        if not paths:
            raise HestInputError(None, source, "no .zarr store found")
    else:
        paths = [locate(p, storage_options) for p in source]
    return paths  # cohort_table refuses those without attrs["hest"] (reading each root zarr.json once)


def _glob(location: Path | UPath, pattern: str, storage_options: Mapping[str, Any] | None) -> list[Path | UPath]:
    if isinstance(location, Path):
        return [Path(p) for p in sorted(glob.glob(pattern))]
    protocol = pattern.split("://", 1)[0]
    return [locate(f"{protocol}://{p}", storage_options) for p in sorted(location.fs.glob(location.path))]


def cohort_table(paths: Iterable[Path | UPath], filters: Mapping[str, Any]) -> pd.DataFrame:
    """One row per store matching ``filters`` (those of ``hest-to-sdata list``), indexed by sample id.

    Raises
    ------
    HestInputError
        If two stores hold the same sample id, or a path is not a store of this package.
    """
    wanted = normalise_filters(**filters)
    rows = {}
    for path in paths:
        hest = store_attrs(path)
        if hest is None:
            raise HestInputError(None, path, "not a store written by hest-spatialdata (no attrs['hest'] in zarr.json)")
        meta = hest.get("metadata", {}) or {}
        record = {**meta, **{k: v for k, v in hest.items() if k != "metadata" and v is not None}}
        record.setdefault("id", hest.get("sample_id"))
        if wanted and not record_matches(record, wanted):
            continue
        sample_id = str(hest.get("sample_id"))
        if sample_id in rows:
            raise HestInputError(sample_id, path, f"the same sample is also at {rows[sample_id]['path']}")
        rows[sample_id] = _row(path, hest, meta)
    table = pd.DataFrame.from_dict(rows, orient="index", columns=TABLE_COLUMNS)
    table.index.name = "sample_id"
    for column in ("n_spots", "n_genes", "n_nuclei", "n_cells"):
        table[column] = table[column].astype("Int64")
    table["pixel_size_um"] = table["pixel_size_um"].astype(float)
    return table


def _row(path: Path | UPath, hest: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    elements = hest.get("elements", {})
    row: dict[str, Any] = {
        "organ": hest.get("organ"),
        "technology": hest.get("technology"),
        "species": hest.get("species"),
        "oncotree_code": hest.get("oncotree_code"),
        "disease_state": meta.get("disease_state"),
        "patient": _text(meta.get("patient")),
        "pixel_size_um": hest.get("pixel_size_um"),
        "n_genes": _table_genes(path) if Elements.TABLE.value in elements.get("tables", []) else None,
        "path": str(path),
    }
    for column, element in _COUNTED_SHAPES.items():
        present = element.value in elements.get("shapes", [])
        row[column] = _parquet_rows(path / "shapes" / element.value) if present else None
    return row


def _text(value: Any) -> str | None:
    value = nan_to_none(value)
    return None if value is None or str(value).strip() == "" else str(value)


def _parquet_rows(folder: Path | UPath) -> int | None:
    """Rows of a shapes element, from its Parquet footer(s) (in object storage: one listing, a footer read a file)."""
    import pyarrow.parquet as pq

    if isinstance(folder, Path):
        files = [folder] if folder.is_file() else sorted(folder.rglob("*.parquet"))
        return sum(pq.read_metadata(f).num_rows for f in files) if files else None
    fs, rows = folder.fs, 0
    files = sorted(key for key in fs.find(folder.path) if key.endswith(".parquet"))
    for key in files:  # small blocks: a footer, not the default 5 MB read-ahead
        with fs.open(key, "rb", block_size=FOOTER_BLOCK, cache_type="bytes") as handle:
            rows += pq.read_metadata(handle).num_rows
    return rows if files else None


def _table_genes(path: Path | UPath) -> int | None:
    """Genes of the store's spot table, from the shape of its var index (zarr.json files only)."""
    index = path / "tables" / Elements.TABLE.value / "var" / "_index"
    for candidate in (index, index / "values"):  # a plain array, or anndata's nullable string array
        meta = read_json(candidate / "zarr.json") or {}
        if meta.get("node_type") == "array":
            return int(meta["shape"][0])
    return None
