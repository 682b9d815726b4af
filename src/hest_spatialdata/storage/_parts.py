"""The parts of a store that the cohort and the patch loaders read, without spatialdata.

Opening a store with ``spatialdata.read_zarr`` costs about a second per process (mostly its import) and reads
every element; a cohort table, an expression matrix or a patch dataset needs a few of them. Everything here reads
the store's own files through public formats: the ``zarr.json`` documents (OME-NGFF ``multiscales`` and the
``coordinateTransformations`` spatialdata writes beside them), the shapes' GeoParquet and the table through
anndata's ``read_elem``. ``tests/test_store_parts.py`` checks the transformations and centres against spatialdata's
own reading, so a change of spatialdata's on-disk format fails loudly.

A store is a local path or an fsspec URL (``s3://bucket/prefix/X.zarr``, ``gs://...``, ``file://...``):
:class:`StoreFiles` reads its files either way.
"""

from __future__ import annotations

import asyncio
import json
import os
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hest_spatialdata._constants import SPOT_INSTANCE_KEY, CoordinateSystems, Elements
from hest_spatialdata.storage.locations import is_url

if TYPE_CHECKING:
    import anndata as ad


#: Files of one store fetched at once at most (:meth:`StoreFiles.fetch`): a few chunk rows of a slide, so that
#: the encoded bytes waiting to be decoded stay bounded (~2 MB per 1024-px H&E chunk) however wide the slide is.
FETCHES_IN_FLIGHT = 32
#: Times a chunk file is asked of its filesystem (each time with the filesystem's own retries) before its error is
#: raised.
FETCH_ATTEMPTS = 3


class StoreFiles:
    """The files of a store, local or at an fsspec URL, read by key (``"images/he/zarr.json"``).

    Parameters
    ----------
    store
        A local path, or a URL with a protocol fsspec knows (``s3://``, ``gs://``, ``file://`` ...).
    storage_options
        fsspec options for a URL (credentials, endpoint); by default fsspec's usual sources (environment, profiles).
    """

    def __init__(self, store: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        self.url = str(store)
        self.storage_options = dict(storage_options or {})
        fs: Any = None
        if is_url(store) and hasattr(store, "fs"):  # a UPath (locations.locate) carries its filesystem and options
            fs, self.root = store.fs, store.path.rstrip("/")
            self.storage_options = {**getattr(store, "storage_options", {}), **self.storage_options}
        elif "://" in self.url:
            from fsspec.core import url_to_fs

            fs, self.root = url_to_fs(self.url, **self.storage_options)
            self.root = self.root.rstrip("/")
        else:
            self.root = str(Path(store))
        self._fs, self._pid = fs, os.getpid()
        self._in_flight: asyncio.Semaphore | None = None

    @property
    def fs(self) -> Any:
        """The store's fsspec filesystem (``None`` for a local folder), this process's own.

        An asynchronous filesystem (s3fs, gcsfs, adlfs) runs on its process's event loop: in a child forked after
        it was used (a DataLoader worker on Linux) fsspec refuses it ("not fork-safe"), so the child makes its own
        from the store's URL and options.
        """
        if self._pid != os.getpid():
            if self._fs is not None:  # from the URL: a chained one (simplecache::s3://) holds an s3fs inside
                from fsspec.core import url_to_fs

                self._fs = url_to_fs(self.url, **self.storage_options)[0]
            self._pid, self._in_flight = os.getpid(), None
        return self._fs

    @property
    def local(self) -> bool:
        """Whether the store is a local folder (its files are read with plain file reads)."""
        return self.fs is None

    def path(self, key: str) -> str:
        """The full path of ``key`` (a local path, or the path on the fsspec filesystem)."""
        return f"{self.root}/{key}" if key else self.root

    def read_bytes(self, key: str) -> bytes:
        """The bytes of file ``key``; :class:`FileNotFoundError` if it does not exist."""
        if self.fs is None:
            return Path(self.path(key)).read_bytes()
        if getattr(self.fs, "async_impl", False):
            data = self.fetch([key])[0].result()
            if data is None:
                raise FileNotFoundError(self.path(key))
            return data
        return self.fs.cat_file(self.path(key), start=0)  # a range: see _cat_or_none

    def fetch(self, keys: list[str]) -> list[Future[bytes | None]]:
        """Start reading several files; a future per file: its bytes, ``None`` for a missing one.

        A store on an asynchronous filesystem (s3fs, gcsfs, adlfs, HTTP) fetches them concurrently on fsspec's own
        event loop, so no thread waits for the network until it asks a future for its result: the caller decodes
        each file as it arrives while the others are still in flight. One request per file (a range from byte 0 to
        the end, see :meth:`read_bytes`), with the filesystem's own retries; a file that cannot be read for another
        reason than its absence raises from its future's ``result()``. Any other store is read here, in order.
        """
        if self.fs is not None and getattr(self.fs, "async_impl", False):
            return [asyncio.run_coroutine_threadsafe(self._fetch_async(key), self.fs.loop) for key in keys]
        futures = []
        for key in keys:
            future: Future[bytes | None] = Future()
            try:
                future.set_result(self.read_bytes(key))
            except FileNotFoundError:
                future.set_result(None)
            except Exception as error:  # noqa: BLE001 - handed to the caller, as the asynchronous path does
                future.set_exception(error)
            futures.append(future)
        return futures

    async def _fetch_async(self, key: str) -> bytes | None:
        if self._in_flight is None:  # made on fsspec's loop, the one every fetch of this store runs on
            self._in_flight = asyncio.Semaphore(FETCHES_IN_FLIGHT)
        async with self._in_flight:
            for attempt in range(FETCH_ATTEMPTS - 1):
                try:
                    return await self._cat_or_none(key)
                except PermissionError:
                    raise
                except Exception:  # noqa: BLE001 - the filesystem's own retries are spent (s3fs: 5, 503s and cut
                    # bodies included): a long training run asks again rather than failing an epoch over a flaky minute
                    await asyncio.sleep(0.5 * 2**attempt)
            return await self._cat_or_none(key)

    async def _cat_or_none(self, key: str) -> bytes | None:
        try:
            # From byte 0 to the end, as a range: one GET. Without a range s3fs (2026.9) first asks for the object's
            # size (a HEAD, to split a large object into concurrent parts): two requests per chunk, a 5x slower epoch.
            return await self.fs._cat_file(self.path(key), start=0)  # fsspec's async API for cat_file
        except FileNotFoundError:
            return None

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_in_flight": None}  # a semaphore belongs to one process's event loop

    def json(self, key: str) -> dict[str, Any]:
        """File ``key`` parsed as JSON."""
        return json.loads(self.read_bytes(key))

    def zarr_group(self, key: str) -> Any:
        """The zarr group at ``key``, read-only (zarr's ``FsspecStore`` for a URL)."""
        import zarr

        if self.fs is None:
            return zarr.open_group(self.path(key), mode="r")
        url = self.url.rstrip("/") + (f"/{key}" if key else "")
        return zarr.open_group(url, mode="r", storage_options=self.storage_options or None)

    def __repr__(self) -> str:
        return f"StoreFiles({self.url!r})"


def as_store_files(store: str | Path | StoreFiles, storage_options: dict[str, Any] | None = None) -> StoreFiles:
    """``store`` as :class:`StoreFiles` (returned as is if it already is one)."""
    return store if isinstance(store, StoreFiles) else StoreFiles(store, storage_options)


# --------------------------------------------------------------------------------------------- the spot table


def read_spot_table(
    store: str | Path | StoreFiles,
    table: str = Elements.TABLE.value,
    obs_columns: tuple[str, ...] = (),
    storage_options: dict[str, Any] | None = None,
) -> ad.AnnData:
    """What the cohort and the loaders need of a store's spot table, read with anndata's ``read_elem``.

    ``X``, the obs names with ``obs["spot_id"]``, the region and instance key columns (and ``obs_columns``), the
    var names with ``var["gene_name"]``, ``obsm["spatial"]`` and ``uns["spatialdata_attrs"]``; the other obs / var
    columns and ``uns`` are not read (the obs QC columns were 2/3 of reading the whole table).

    Parameters
    ----------
    store
        The store (path, URL or :class:`StoreFiles`).
    table
        The table element.
    obs_columns
        More obs columns to read (when present).
    storage_options
        fsspec options for a store at a URL.
    """
    import anndata as ad
    from anndata.io import read_elem

    group = as_store_files(store, storage_options).zarr_group(f"tables/{table}")

    def frame(name: str, columns: tuple[str, ...]) -> pd.DataFrame:
        part = group[name]
        index = pd.Index(np.asarray(read_elem(part[part.attrs["_index"]])).astype(str), dtype=object)
        return pd.DataFrame({c: np.asarray(read_elem(part[c])) for c in columns if c in part}, index=index)

    obsm = group["obsm"]
    uns = group.get("uns", {})
    attrs = {k: _plain(v) for k, v in read_elem(uns["spatialdata_attrs"]).items()} if "spatialdata_attrs" in uns else {}
    keys = tuple(attrs[k] for k in ("region_key", "instance_key") if k in attrs)
    return ad.AnnData(
        X=read_elem(group["X"]),
        obs=frame("obs", tuple(dict.fromkeys((SPOT_INSTANCE_KEY, *keys, *obs_columns)))),
        var=frame("var", ("gene_name",)),
        obsm={"spatial": read_elem(obsm["spatial"])} if "spatial" in obsm else None,
        uns={"spatialdata_attrs": attrs} if attrs else None,
    )


def _plain(value: Any) -> Any:
    """A scalar or list from an anndata ``uns`` value (0-d arrays and numpy strings become Python values)."""
    array = np.asarray(value)
    return array.item() if array.ndim == 0 else array.tolist()


def table_keys(adata: ad.AnnData) -> tuple[Any, str, str]:
    """``(region, region_key, instance_key)`` of a table read by :func:`read_spot_table` or by spatialdata."""
    attrs = adata.uns.get("spatialdata_attrs", {})
    try:
        return attrs["region"], attrs["region_key"], attrs["instance_key"]
    except KeyError as error:
        raise ValueError(f"the table does not annotate spatialdata elements (no {error} in uns)") from None


# --------------------------------------------------------------------------------------------- transformations


def affine_to(transformations: list[dict[str, Any]], coordinate_system: str) -> np.ndarray:
    """The 3 x 3 (x, y) matrix of the NGFF transformation to ``coordinate_system`` among ``transformations``.

    Handles the types spatialdata writes for this package's elements: ``identity``, ``scale``, ``translation``,
    ``affine`` and ``sequence``; raises :class:`ValueError` for others (or an absent coordinate system).
    """
    for transformation in transformations:
        if transformation.get("output", {}).get("name") == coordinate_system:
            return _matrix(transformation)
    raise ValueError(f"no transformation to {coordinate_system!r}")


def _axes(transformation: dict[str, Any]) -> list[str]:
    return [axis["name"] for axis in transformation.get("input", {}).get("axes", [])]


def _matrix(transformation: dict[str, Any], axes: list[str] | None = None) -> np.ndarray:
    kind = transformation["type"]
    axes = _axes(transformation) or axes or []
    matrix = np.eye(3)
    if kind == "identity":
        return matrix
    if kind == "sequence":
        for step in transformation["transformations"]:
            matrix = _matrix(step, axes) @ matrix
        return matrix
    if kind in ("scale", "translation"):
        values = dict(zip(axes or ["x", "y"][-len(transformation[kind]) :], transformation[kind], strict=True))
        for row, axis in enumerate(("x", "y")):
            if kind == "scale":
                matrix[row, row] = values.get(axis, 1.0)
            else:
                matrix[row, 2] = values.get(axis, 0.0)
        return matrix
    if kind == "affine":
        full = np.asarray(transformation["affine"], dtype=float)
        outputs = [axis["name"] for axis in transformation.get("output", {}).get("axes", [])] or axes
        for row, out_axis in enumerate(("x", "y")):
            source = full[outputs.index(out_axis)]
            matrix[row] = [source[axes.index("x")], source[axes.index("y")], source[-1]]
        return matrix
    raise ValueError(f"unsupported coordinate transformation {kind!r}")


def apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``matrix`` (3 x 3) applied to (n, 2) points."""
    return xy @ matrix[:2, :2].T + matrix[:2, 2]


# --------------------------------------------------------------------------------------------- image and spots


@dataclass(frozen=True)
class ImageLevel:
    """One pyramid level of an image element.

    Attributes
    ----------
    key
        The level array's folder in the store (``"images/he/s0"``).
    shape
        (c, y, x).
    um_per_px
        µm per pixel (the larger of x and y).
    to_level
        3 x 3 matrix from ``global`` coordinates to this level's pixels.
    """

    key: str
    shape: tuple[int, ...]
    um_per_px: float
    to_level: np.ndarray


def image_levels(files: StoreFiles, image: str = Elements.HE.value) -> list[ImageLevel]:
    """The pyramid of ``image`` from its ``zarr.json`` files (OME-NGFF ``multiscales``), finest first."""
    group = f"images/{image}"
    attrs = files.json(f"{group}/zarr.json")["attributes"]
    multiscales = attrs.get("ome", attrs)["multiscales"][0]
    element = multiscales["coordinateTransformations"]
    to_global, to_microns = affine_to(element, CoordinateSystems.GLOBAL), affine_to(element, CoordinateSystems.MICRONS)
    axes = [axis["name"] for axis in multiscales["axes"]]
    levels = []
    for dataset in multiscales["datasets"]:
        # this level's pixels -> level-0 pixels: the scale only, as spatialdata composes a level's transformation
        # (the half-pixel translation written beside it is not applied), so patches sit where they always did
        within = np.eye(3)
        for step in dataset["coordinateTransformations"]:
            if step["type"] == "scale":
                within = _matrix(step, axes) @ within
        meta = files.json(f"{group}/{dataset['path']}/zarr.json")
        microns = to_microns @ within
        levels.append(
            ImageLevel(
                key=f"{group}/{dataset['path']}",
                shape=tuple(meta["shape"]),
                um_per_px=float(np.abs(np.diag(microns)[:2]).max()),
                to_level=np.linalg.inv(to_global @ within),
            )
        )
    return levels


def shape_centres(files: StoreFiles, shapes: str) -> tuple[pd.Index, np.ndarray]:
    """Ids and ``global`` (x, y) centres of a shapes element (circles: their points; polygons: their centroid)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    folder = f"shapes/{shapes}"
    transform = affine_to(files.json(f"{folder}/zarr.json")["attributes"]["coordinateTransformations"], "global")
    data = pa.BufferReader(files.read_bytes(f"{folder}/shapes.parquet"))  # one request; spots are small
    frame = pq.read_table(data).to_pandas()  # the pandas index is restored from the file's metadata
    geometry = frame["geometry"].to_numpy()
    geometry = shapely.from_wkb(geometry) if len(geometry) and isinstance(geometry[0], bytes) else geometry
    centres = shapely.get_coordinates(shapely.centroid(geometry))
    return pd.Index(frame.index.astype(str)), apply(transform, centres)
