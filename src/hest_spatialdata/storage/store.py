"""Write one HEST sample as a SpatialData Zarr store, atomically; tell complete stores from partial ones.

An existing store is never touched unless asked; the cheap completeness check here is what resumable batches use.

This module imports spatialdata only when a store is actually written, so checking what is already done costs
no more than reading a few JSON files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cached_property
from functools import partial as partial_call
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hest_spatialdata._constants import ATTRS_KEY, CoordinateSystems, Elements
from hest_spatialdata.errors import StoreExistsError
from hest_spatialdata.roots.samples import SampleFiles, sample_files
from hest_spatialdata.source.layout import Part
from hest_spatialdata.storage.locations import StoreLocation, is_url, locate, read_json

if TYPE_CHECKING:
    import zarr
    from spatialdata import SpatialData
    from upath import UPath

    from hest_spatialdata.writer.image import ImageWrite, Level

#: Image codec: plain zstd (zarr's own ``ZstdCodec``, as zarr's default) at level 1 rather than zarr's default level
#: 3. On noisy H&E pixels level 1 encodes 2-3x faster (it was half the converter's CPU at level 3) for a store of
#: the same size, ~1.07x HEST's LZW TIFFs (benchmarks/bench_wsi.py). ``None`` gives zarr's default (zstd 3); in
#: spatialdata 0.8 ``{"zstd": n}`` is plain zstd level n and ``{"lz4": n}`` blosc-lz4 with bitshuffle (~4x faster,
#: ~1.2x the TIFF).
DEFAULT_RASTER_COMPRESSOR: dict[str, int] | None = {"zstd": 1}
PARTIAL_MARK = ".partial-"
#: Marks an existing store set aside while an overwrite renames the new one in (``.{id}.zarr.replaced-{pid}-{hex}``).
REPLACED_MARK = ".replaced-"
#: The temporary and set-aside stores this process is writing now (a leftover with our process id is not one).
_WRITING: set[Path] = set()


def store_path(out_dir: str | Path | UPath | StoreLocation, sample_id: str) -> Path | UPath:
    """Where the store of ``sample_id`` goes: ``out_dir/{id}.zarr`` (a ``UPath`` for a URL)."""
    return StoreLocation.of(out_dir).store(sample_id)


def store_attrs(path: str | Path | UPath) -> dict[str, Any] | None:
    """``attrs["hest"]`` of a store, read from its root ``zarr.json`` without importing spatialdata.

    The one reader of a store's attributes: the cohort, napari, validate and the resume all use it. ``path`` is a
    folder or a ``UPath`` from :func:`hest_spatialdata.storage.locations.locate` (object storage).

    Returns ``None`` if the path is not a readable SpatialData store written by this package.
    """
    root = read_json(locate(path) / "zarr.json")
    attrs = (root or {}).get("attributes", {})
    hest = attrs.get(ATTRS_KEY)
    if "spatialdata_attrs" not in attrs or not isinstance(hest, dict):
        return None
    return hest


def store_is_complete(path: str | Path | UPath) -> bool:
    """Whether a finished store of this package is at ``path``.

    Locally stores only appear once complete (renamed into place); in object storage a store is complete once its
    root ``zarr.json`` exists, since it is the object written last (see :mod:`hest_spatialdata.storage._publish`).
    """
    location = locate(path)
    hest = store_attrs(location)
    if hest is None or is_url(location):
        return hest is not None
    return all((location / kind / name).is_dir() for kind, name in _written_elements(hest))


class StoreSource(Protocol):
    """What :func:`write_store` writes one store from: a HEST sample (:class:`HestSample`) or an imported 10x run.

    ``sample_id`` names the store (``{id}.zarr``) and the messages.
    """

    sample_id: str

    def check(self, elements: list[str] | None) -> None:
        """Raise :class:`~hest_spatialdata.errors.HestInputError` for bad input, before anything is written."""

    def slide(self) -> tuple[list[Level], bool] | None:
        """The ``he`` levels (full resolution first, each ``(y, x, 3)``) and whether they are read remotely."""

    def read(self, elements: list[str], chunk_size: int) -> SpatialData:
        """Every wanted element but ``he``, lazily, with ``attrs["hest"]`` (its ``elements`` listing them)."""

    def attrs(self) -> dict[str, Any]:
        """``attrs["hest"]`` of a store of the slide alone (``elements`` empty)."""


@dataclass(frozen=True)
class HestSample:
    """A sample of a HEST root as a :class:`StoreSource` (what ``convert`` writes)."""

    hest_dir: str | Path
    sample_id: str

    @cached_property
    def files(self) -> SampleFiles:
        """The sample's files, found once (a remote root lists them by request) for the check and the slide."""
        return sample_files(self.hest_dir, self.sample_id)

    def check(self, elements: list[str] | None) -> None:
        """The metadata (and the slide, for ``he``) must be present."""
        self.files.require(Part.METADATA)
        if elements is None or Elements.HE.value in elements:
            self.files.require(Part.WSI)

    def slide(self) -> tuple[list[Level], bool] | None:
        """The slide's TIFF levels (remote for a remote root)."""
        from hest_spatialdata.readers.wsi import open_levels
        from hest_spatialdata.roots.remote import RemoteFile

        path = self.files.require(Part.WSI)
        return list(open_levels(path, self.sample_id)), isinstance(path, RemoteFile)

    def read(self, elements: list[str], chunk_size: int) -> SpatialData:
        """:func:`hest_spatialdata.read_hest` of the sample."""
        from hest_spatialdata.readers.sample import read_hest

        return read_hest(self.hest_dir, self.sample_id, elements=elements, chunk_size=chunk_size)

    def attrs(self) -> dict[str, Any]:
        """:func:`hest_spatialdata.readers.sample.sample_source_attrs`."""
        from hest_spatialdata.readers.sample import sample_source_attrs

        return sample_source_attrs(self.hest_dir, self.sample_id)


def convert_sample(
    hest_dir: str | Path,
    sample_id: str,
    out_dir: str | Path | UPath | StoreLocation,
    *,
    overwrite: bool = False,
    elements: Iterable[str] | None = None,
    chunk_size: int | None = None,
    raster_compressor: dict[str, int] | None = DEFAULT_RASTER_COMPRESSOR,
) -> Path | UPath:
    """Convert one sample into ``out_dir/{sample_id}.zarr`` (the task :func:`hest_spatialdata.convert` runs).

    :func:`write_store` of the sample's :class:`HestSample`: written atomically, locally or to a URL.

    Parameters
    ----------
    hest_dir
        The HEST root.
    sample_id
        The sample id.
    out_dir
        Output folder (created if needed), or a URL / ``UPath`` (see :func:`hest_spatialdata.storage.locations.locate`),
        or one already parsed (:class:`~hest_spatialdata.storage.locations.StoreLocation`).
    overwrite
        Replace an existing store.
    elements
        Element names to write; all available by default.
    chunk_size
        Image chunk side in pixels (default: :data:`hest_spatialdata.readers.wsi.DEFAULT_CHUNK_SIZE`).
    raster_compressor
        spatialdata's ``raster_compressor`` (``{"zstd": level}`` or ``{"lz4": level}``), ``None`` for plain zstd.

    Returns
    -------
    The path of the store.

    Raises
    ------
    StoreExistsError
        If the store exists and ``overwrite`` is false.
    HestInputError
        If a source file is missing or bad (nothing is written).
    """
    source = HestSample(hest_dir, sample_id)
    options = {"elements": elements, "chunk_size": chunk_size, "raster_compressor": raster_compressor}
    return write_store(source, out_dir, overwrite=overwrite, **options)


def write_store(
    source: StoreSource,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    elements: Iterable[str] | None = None,
    chunk_size: int | None = None,
    raster_compressor: dict[str, int] | None = DEFAULT_RASTER_COMPRESSOR,
) -> Path | UPath:
    """Write the store of ``source`` into ``out_dir/{sample_id}.zarr``, atomically.

    The store is written to a temporary sibling and renamed into place only when complete, so an interrupted
    write never leaves a partial ``{id}.zarr``. For a URL ``out_dir`` (``s3://bucket/prefix``, any fsspec
    URL) the store is written into a local temporary folder (``$HEST_TMPDIR`` or the system's; one sample's
    store of disk), then uploaded with the root ``zarr.json`` last (:mod:`hest_spatialdata.storage._publish`). An
    existing store is replaced only with ``overwrite=True``: locally only once the new one is complete; in object
    storage (no rename) the old store stops being complete before the upload starts.

    Parameters
    ----------
    source
        What to write (:class:`StoreSource`).
    out_dir, overwrite, elements, chunk_size, raster_compressor
        As for :func:`convert_sample`.

    Returns
    -------
    The path of the store.
    """
    import zarr

    sample_id = source.sample_id
    location = StoreLocation.of(out_dir)
    final = location.store(sample_id)
    if location.url:
        if store_is_complete(final) and not overwrite:
            raise StoreExistsError(f"sample {sample_id}: {final} exists; pass --overwrite to replace it")
        options = {"elements": elements, "chunk_size": chunk_size, "raster_compressor": raster_compressor}
        return _write_to_url(source, final, overwrite=overwrite, **options)
    out_dir = final.parent  # file:// URLs and local UPaths included
    remove_stale_partials(out_dir, sample_id)  # first: a store a dead overwrite set aside is put back
    if final.exists() and not overwrite:
        raise StoreExistsError(f"sample {sample_id}: {final} exists; pass --overwrite to replace it")
    elements = None if elements is None else list(elements)
    source.check(elements)
    with_image = elements is None or Elements.HE.value in elements
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{sample_id}.zarr{PARTIAL_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _WRITING.add(partial)
    threads = _threads()
    with ExitStack() as running:  # on the way out, every writer thread is stopped and awaited ...
        try:
            root = zarr.create_group(zarr.storage.LocalStore(partial), zarr_format=3)
            image = None
            slide = source.slide() if with_image else None
            if slide is not None:
                # The slide is encoded in threads (the codecs release the GIL) while spatialdata is imported and
                # the other elements are read and written: most of the import then costs no wall time.
                image = _start_slide(root, *slide, sample_id, chunk_size, raster_compressor, threads)
                running.callback(image.cancel)
            others = _Others(elements, chunk_size, raster_compressor, threads)
            _write_elements(source, partial, others, image, running)
            _replace(partial, final, overwrite=overwrite)
        finally:
            running.close()  # ... before the partial store is removed: nothing of it may remain after a failure
            shutil.rmtree(partial, ignore_errors=True)
            _WRITING.discard(partial)
    return final


@dataclass(frozen=True)
class _Others:
    """How to write the elements other than the slide."""

    elements: list[str] | None
    chunk_size: int | None
    raster_compressor: dict[str, int] | None
    threads: int


def _start_slide(
    root: zarr.Group,
    levels: list[Level],
    remote: bool,
    sample_id: str,
    chunk_size: int | None,
    raster_compressor: dict[str, int] | None,
    threads: int,
) -> ImageWrite:
    from hest_spatialdata._progress import current_bar
    from hest_spatialdata.readers.wsi import DEFAULT_CHUNK_SIZE, REMOTE_BLOCK
    from hest_spatialdata.writer.image import start_image_write

    chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
    # a remote slide is read in blocks of whole rows of tiles (one request per row), cut into the store's chunks
    block = max(chunk_size, REMOTE_BLOCK // chunk_size * chunk_size) if remote else chunk_size
    group = root.require_group("images").create_group(Elements.HE.value)
    bar = current_bar.get()
    if bar is not None:  # the CLI's bar counts the slide's blocks beside the other elements' dask tasks
        bar.add_tasks(sum(-(-h // block) * -(-w // block) for h, w, _ in (level.shape for level in levels)))
    return start_image_write(
        group,
        levels,
        chunk_size=chunk_size,
        raster_compressor=raster_compressor,
        threads=threads,
        block_size=block,
        on_block=None if bar is None else bar.advance,
    )


def _write_elements(
    source: StoreSource, partial: Path, how: _Others, image: ImageWrite | None, running: ExitStack
) -> None:
    """Write every element but the slide with spatialdata (if any is wanted), then the slide's metadata and the root's.

    A store of the slide alone is written without importing spatialdata (:mod:`hest_spatialdata.writer.root`).
    """
    import zarr

    from hest_spatialdata.readers.wsi import CHANNELS
    from hest_spatialdata.writer.image import write_image_metadata
    from hest_spatialdata.writer.root import write_root_attrs

    wanted = [e.value for e in Elements] if how.elements is None else how.elements
    others = [e for e in wanted if e != Elements.HE.value]
    sdata = _write_others(source, partial, how, others, running) if others else None
    hest = sdata.attrs[ATTRS_KEY] if sdata is not None else source.attrs()
    root = zarr.open_group(zarr.storage.LocalStore(partial), mode="r+")
    if image is not None:
        image.result()
        group = root[f"images/{Elements.HE.value}"]
        shapes = [group[f"s{k}"].shape for k in range(len(list(group.array_keys())))]
        ps = hest["pixel_size_um"]
        systems = {CoordinateSystems.GLOBAL.value: None, CoordinateSystems.MICRONS.value: (ps, ps)}
        write_image_metadata(group, shapes, channels=CHANNELS, coordinate_systems=systems)
        hest["elements"] = {"images": [Elements.HE.value]} | hest["elements"]
    if sdata is not None:
        sdata.write_attrs()
        sdata.write_consolidated_metadata()
    else:
        write_root_attrs(root, {ATTRS_KEY: hest})


def _write_others(
    source: StoreSource, partial: Path, how: _Others, others: list[str], running: ExitStack
) -> SpatialData:
    """Read the elements ``others`` and write them into the store at ``partial`` with spatialdata."""
    from concurrent.futures import ThreadPoolExecutor

    import dask

    from hest_spatialdata.readers.wsi import DEFAULT_CHUNK_SIZE

    sdata = source.read(others, how.chunk_size or DEFAULT_CHUNK_SIZE)
    sdata.path = partial
    # dask's own pool would outlive a failure; this one is shut down (its tasks awaited) before the clean-up
    pool = ThreadPoolExecutor(how.threads, thread_name_prefix="element-writer")
    running.callback(pool.shutdown, wait=True, cancel_futures=True)
    # labels are drawn from the nuclei while they are written (compiled, free of the GIL): writing them beside the
    # other elements, whose writing is mostly single-threaded Python, uses the cores those leave idle
    beside = ThreadPoolExecutor(1, thread_name_prefix="labels")
    running.callback(beside.shutdown, wait=True, cancel_futures=True)
    stop = threading.Event()
    running.callback(stop.set)  # first, on the way out: the labels stop at their next chunk
    with dask.config.set(pool=pool):
        names = [name for _, name, _ in sdata.gen_elements()]
        labels = [beside.submit(_start_labels(sdata, partial, n, how, stop)) for n in names if n in sdata.labels]
        for name in names:
            if name not in sdata.labels:
                sdata.write_element(name, raster_compressor=how.raster_compressor)
        for written in labels:
            written.result()
    return sdata


def _start_labels(
    sdata: SpatialData, partial: Path, name: str, how: _Others, stop: threading.Event
) -> Callable[[], None]:
    """Write the metadata of a labels element now; return the call that writes its chunks.

    See :func:`hest_spatialdata.writer.labels.write_labels`. spatialdata writes the element instead (in the returned
    call) when a transformation is neither an identity nor a scale.
    """
    import zarr
    from spatialdata.transformations import Identity, Scale, get_transformation

    from hest_spatialdata.writer.labels import write_labels

    element = sdata.labels[name]
    systems: dict[str, tuple[float, float] | None] = {}
    for system, transformation in get_transformation(element, get_all=True).items():
        if isinstance(transformation, Identity):
            systems[system] = None
        elif isinstance(transformation, Scale) and sorted(transformation.axes) == ["x", "y"]:
            factors = dict(zip(transformation.axes, transformation.scale, strict=True))
            systems[system] = (float(factors["y"]), float(factors["x"]))
        else:
            return partial_call(sdata.write_element, name, raster_compressor=how.raster_compressor)
    scales = (
        sorted(element.children, key=lambda k: int(k.removeprefix("scale"))) if hasattr(element, "children") else []
    )
    levels = [element[scale]["image"].data for scale in scales] or [element.data]
    root = zarr.open_group(zarr.storage.LocalStore(partial), mode="r+")
    return write_labels(root, name, levels, coordinate_systems=systems, raster_compressor=how.raster_compressor,
                        threads=how.threads, stop=stop)  # fmt: skip


def _write_to_url(source: StoreSource, final: UPath, *, overwrite: bool, **options: Any) -> UPath:
    """Write the store into a local temporary folder (one sample's disk), then publish it to ``final``."""
    import tempfile

    from hest_spatialdata.storage._publish import check_not_busy, publish_store

    sample_id = source.sample_id
    check_not_busy(final, sample_id)  # before converting: a store another converter holds is refused at once
    with tempfile.TemporaryDirectory(prefix=f"hest-{sample_id}-", dir=os.environ.get("HEST_TMPDIR")) as scratch:
        local = write_store(source, scratch, **options)
        publish_store(local, final, sample_id=sample_id, overwrite=overwrite)
    return final


def remove_stale_partials(out_dir: Path, sample_id: str) -> None:
    """Clean up after converters of ``sample_id`` that are no longer running.

    Their temporary stores are deleted. A store set aside by an overwrite (:func:`_replace`) is deleted when the new
    one is in place, and put back when the converter died between the two renames, so no store is ever lost. A
    leftover named with this process's id is an earlier process's (containers reuse ids) unless this process is
    writing it now.
    """
    from hest_spatialdata.storage._publish import process_alive

    final = out_dir / f"{sample_id}.zarr"
    for mark in (PARTIAL_MARK, REPLACED_MARK):
        for leftover in out_dir.glob(f".{sample_id}.zarr{mark}*"):
            pid = leftover.name.split(mark, 1)[1].split("-", 1)[0]
            if leftover in _WRITING or (pid.isdigit() and int(pid) != os.getpid() and process_alive(int(pid))):
                continue
            if mark == REPLACED_MARK and not final.exists():
                with contextlib.suppress(OSError):  # another run put it back first
                    leftover.rename(final)
            else:
                shutil.rmtree(leftover, ignore_errors=True)


def _replace(partial: Path, final: Path, *, overwrite: bool) -> None:
    if not final.exists():
        partial.rename(final)
        return
    if not overwrite:  # another process finished the same store meanwhile
        raise StoreExistsError(f"{final} appeared while converting; pass --overwrite to replace it")
    old = final.with_name(f".{final.name}{REPLACED_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    _WRITING.add(old)
    try:
        final.rename(old)
        partial.rename(final)  # a crash before this line leaves ``old``: remove_stale_partials puts it back
        shutil.rmtree(old, ignore_errors=True)
    finally:
        _WRITING.discard(old)


def _threads() -> int:
    """Writer threads: dask's ``num_workers`` where set (a batch's threads per sample), else one per core."""
    import dask

    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def _written_elements(hest: dict[str, Any]) -> list[tuple[str, str]]:
    return [(kind, name) for kind, names in hest.get("elements", {}).items() for name in names]
