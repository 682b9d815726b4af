"""``read_store``: open a store, local or in object storage, with spatialdata's own reader (the one adapter).

spatialdata 0.8 with zarr 3.4 cannot read a remote store, for three reasons found in its source
(``spatialdata/_io/_utils.py::_resolve_zarr_store`` and ``spatialdata/_io/io_*.py``):

1. an ``s3://`` ``UPath`` reaches ``isinstance(path, zarr.storage.StoreLike)``; ``StoreLike`` is a type alias
   holding ``dict[str, Buffer]``, a parameterised generic, so ``isinstance`` raises ``TypeError: isinstance() arg 2
   must be a type...`` before the ``UPath`` branch below it is reached;
2. a ``zarr.Group`` on an ``FsspecStore`` is rebuilt as ``FsspecStore(path, fs=fs)``, but the first positional
   parameter of ``FsspecStore.__init__`` is ``fs``: ``got multiple values for argument 'fs'``;
3. even past those, every element reader takes a *path string* (``root_group.store.root`` joined with the element
   path, an attribute only ``LocalStore`` has) and opens it with ``zarr.open(Path(store))``, i.e. locally.

So the adapter uses no private API at all: it mirrors the store's *metadata* into a temporary folder (every
``zarr.json``; the tables and shapes, which spatialdata reads into memory anyway; for points an empty Parquet file
with each part's schema, read from its footer), lets ``spatialdata.read_zarr`` read that folder, then rebinds the
lazy parts to the remote objects: each image/label level becomes ``dask.array.from_zarr`` of the remote array
(same chunks), each points element ``dask.dataframe.read_parquet`` of the remote Parquet files (same columns,
attributes kept). Pixels, points and tables are therefore the stored bytes, decoded by the same code as locally.
``tests/test_s3.py::test_spatialdata_still_cannot_read_remote_stores`` fails when spatialdata changes this.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.storage.locations import is_url, locate, zarr_store
from hest_spatialdata.storage.store import store_attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from spatialdata import SpatialData
    from upath import UPath

#: Element kinds spatialdata reads eagerly (whole objects are mirrored).
_EAGER = ("tables", "shapes")


def read_store(
    location: str | Path | UPath,
    storage_options: Mapping[str, Any] | None = None,
    *,
    selection: tuple[str, ...] | None = None,
) -> SpatialData:
    """Open a store of this package, local or at any fsspec URL, lazily (images and points read on demand).

    Parameters
    ----------
    location
        The store: a folder, or a URL such as ``s3://bucket/prefix/TENX95.zarr``.
    storage_options
        fsspec options for a URL (endpoint, credentials ...); credentials otherwise come from the usual places.
    selection
        Element kinds to read (``("images", "tables")`` ...), all by default, as ``spatialdata.read_zarr``.

    Returns
    -------
    The SpatialData, with the same elements as ``spatialdata.read_zarr`` of a local copy. For a URL,
    ``sdata.path`` is ``None`` (spatialdata cannot write there).

    Raises
    ------
    HestInputError
        If no complete store of this package is at ``location``.
    """
    import spatialdata as sd

    store = locate(location, storage_options)
    if store_attrs(store) is None:
        raise HestInputError(None, store, "no complete store of hest-spatialdata here (no attrs['hest'] in zarr.json)")
    if not is_url(store):
        return sd.read_zarr(store, selection=selection)
    kinds = selection or ("images", "labels", "points", "shapes", "tables")
    with tempfile.TemporaryDirectory(prefix="hest-read-") as scratch:
        mirror = Path(scratch) / "store.zarr"
        _mirror(store, mirror, kinds)
        sdata = sd.read_zarr(mirror, selection=tuple(kinds))
        _rebind_rasters(sdata, store, mirror)
        _rebind_points(sdata, store)
    sdata.path = None
    return sdata


def _mirror(store: UPath, mirror: Path, kinds: tuple[str, ...]) -> None:
    """Copy the metadata objects (and the eager elements) of ``store`` into ``mirror``."""
    fs, root = store.fs, store.path.rstrip("/")
    wanted, parquet_parts = [], []
    for key in fs.find(root):
        relative = key[len(root) + 1 :]
        kind = relative.split("/", 1)[0]
        if relative == "zarr.json" or (kind in kinds and (relative.endswith("zarr.json") or kind in _EAGER)):
            wanted.append(relative)
        elif kind == "points" and kind in kinds and relative.endswith(".parquet"):
            parquet_parts.append(relative)
    for relative in wanted + parquet_parts:
        (mirror / relative).parent.mkdir(parents=True, exist_ok=True)
    fs.get([f"{root}/{r}" for r in wanted], [str(mirror / r) for r in wanted])
    for relative in parquet_parts:
        _empty_parquet_like(fs, f"{root}/{relative}", mirror / relative)


def _empty_parquet_like(fs: Any, key: str, local: Path) -> None:
    """A Parquet file with no rows and the schema (pandas metadata included) of the remote one (its footer)."""
    import pyarrow.parquet as pq

    with fs.open(key, "rb") as remote:
        schema = pq.read_schema(remote)
    pq.write_table(schema.empty_table(), local)


def _rebind_rasters(sdata: SpatialData, store: UPath, mirror: Path) -> None:
    """Point every image/label level at the remote array of the same path, with the same chunks."""
    import zarr

    remote = zarr.open_group(zarr_store(store), mode="r")
    for kind in ("images", "labels"):
        for name, element in getattr(sdata, kind).items():
            local = zarr.open_group(mirror / kind / name, mode="r")
            paths = [d["path"] for d in local.attrs["ome"]["multiscales"][0]["datasets"]]
            if not hasattr(element, "children"):  # a single-scale DataArray
                getattr(sdata, kind)[name] = element.copy(data=_remote_level(remote, kind, name, paths[0], element))
                continue
            for index, path in enumerate(paths):
                node = element[f"scale{index}"]
                for var in list(node.data_vars):
                    node[var] = node[var].copy(data=_remote_level(remote, kind, name, path, node[var]))


def _remote_level(remote: Any, kind: str, name: str, path: str, local: Any) -> Any:
    import dask.array as da

    array = remote[f"{kind}/{name}/{path}"]
    return da.from_zarr(array, chunks=local.data.chunks)


def _rebind_points(sdata: SpatialData, store: UPath) -> None:
    """Read each points element from the remote Parquet files, keeping spatialdata's attributes."""
    import dask.dataframe as dd

    fs, root = store.fs, store.path.rstrip("/")
    for name, local in list(sdata.points.items()):
        remote = dd.read_parquet(f"{root}/points/{name}/points.parquet", filesystem=fs)
        remote.attrs.update(local.attrs)
        sdata.points[name] = remote
