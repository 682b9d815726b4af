"""napari readers: stores written by hest-spatialdata, and HEST-1k samples read in place.

- ``*.zarr`` stores of this package (recognised by ``attrs["hest"]`` in the root ``zarr.json``) open through
  napari-spatialdata, whose widgets (coordinate systems, colour by any gene, annotate and save back into the store)
  need a SpatialData backed by the store; the default layers are then added for the user.
- A HEST root, or one file of a sample in it (``wsis/{id}.tif``, ``st/{id}.h5ad``, ``metadata/{id}.json``, ...), is
  read lazily with :func:`hest_spatialdata.read_hest` and returned as plain napari layers: nothing is written, and
  the reader stays a pure function that napari can call for any viewer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata.roots.remote import is_remote
from hest_spatialdata.roots.samples import list_sample_ids
from hest_spatialdata.source.layout import PARTS, SAMPLE_PARTS, Part, identify
from hest_spatialdata.storage.store import store_attrs

if TYPE_CHECKING:
    import napari


ReaderFunction = Callable[[Any], list[Any]]


# --------------------------------------------------------------------------------------------- stores


def get_store_reader(path: str | list[str]) -> ReaderFunction | None:
    """Napari reader hook for SpatialData stores written by hest-spatialdata.

    Parameters
    ----------
    path
        A path, or a list holding one.

    Returns
    -------
    :func:`read_store`, or ``None`` if ``path`` is not a store of this package (other Zarr stores are left to
    napari-spatialdata or napari).
    """
    single = _single_path(path)
    if single is None or store_attrs(single) is None:
        return None
    return read_store


def read_store(path: str | list[str]) -> list[Any]:
    """Open a hest-spatialdata store in the current viewer through napari-spatialdata.

    Its "SpatialData" and "View" widgets are docked and the default layers (H&E, tissue, spots coloured by the most
    expressed gene, nuclei by class, a transcript subsample) are added from napari-spatialdata's loader thread.
    Without napari-spatialdata, the same layers are returned as plain napari layers.

    Parameters
    ----------
    path
        The store: a folder or a URL (``s3://bucket/prefix/ID.zarr``).

    Returns
    -------
    ``[(None,)]`` (napari's "claimed, layers added elsewhere"), or the layers without napari-spatialdata.
    """
    from hest_spatialdata.napari._layers import sample_layers, use_compiled_triangulation
    from hest_spatialdata.napari._napari_spatialdata_adapter import UnsupportedNapariSpatialData
    from hest_spatialdata.storage.reader import read_store as read_sdata

    use_compiled_triangulation()
    single = _single_path(path)
    sdata = read_sdata(single)  # a folder or a URL (s3://...): credentials from the environment
    try:
        from hest_spatialdata.napari._spatialdata_view import open_in_napari_spatialdata

        open_in_napari_spatialdata(sdata)
    except (ImportError, UnsupportedNapariSpatialData):  # napari-spatialdata not installed, or another release
        return sample_layers(sdata)
    return [(None,)]


# --------------------------------------------------------------------------------------------- HEST roots


def get_hest_reader(path: str | list[str]) -> ReaderFunction | None:
    """Napari reader hook for a HEST root or one file of a sample in a HEST root.

    Parameters
    ----------
    path
        A HEST root folder (``wsis/``, ``st/``, ``metadata/``, ...) or a file of a sample inside one.

    Returns
    -------
    :func:`read_hest_path`, or ``None`` if ``path`` is not part of a HEST root.
    """
    single = _single_path(path)
    if single is None or find_hest_sample(single) is None:
        return None
    return read_hest_path


def read_hest_path(path: str | list[str]) -> list[Any]:
    """Read a HEST sample in place (lazily, nothing written) as napari layers.

    A root holding several samples docks the sample browser on it (when a viewer is open) so the user picks one;
    without a viewer, the first sample is read.

    Parameters
    ----------
    path
        A HEST root or a file of a sample inside one.

    Returns
    -------
    Layer data tuples, or ``[(None,)]`` when the browser was docked instead.
    """
    from hest_spatialdata.napari._layers import use_compiled_triangulation

    use_compiled_triangulation()
    single = _single_path(path)
    found = find_hest_sample(single) if single is not None else None
    if found is None:
        raise ValueError(f"{path} is not a HEST root nor a file of a sample in one")
    root, sample_id = found
    if sample_id is None:
        ids = list_sample_ids(root)
        if len(ids) > 1 and _dock_browser(root):
            return [(None,)]
        sample_id = ids[0]
    from hest_spatialdata.napari._layers import hest_sample_layers

    return hest_sample_layers(root, sample_id)


def find_hest_sample(path: str | Path) -> tuple[Path, str | None] | None:
    """The HEST root and sample id a path belongs to.

    Parameters
    ----------
    path
        A HEST root, or a file of a sample in one (any part: ``wsis/{id}.tif``, ``st/{id}.h5ad``,
        ``metadata/{id}.json``, ``cellvit_seg/{id}_cellvit_seg.parquet``, ...).

    Returns
    -------
    ``(root, sample_id)``; ``sample_id`` is ``None`` for a root with several samples (one sample: its id).
    ``None`` if the path is not in a HEST root or the sample has no metadata JSON. A remote path
    (``hf://datasets/MahmoodLab/hest/wsis/ZEN61.tif``, any file of a sample) gives the remote root and its sample,
    recognised by name alone (no request: it is read lazily by byte ranges, see :mod:`hest_spatialdata.roots.remote`).
    """
    if is_remote(path):
        return _remote_sample(str(path))
    path = Path(path)
    if path.is_dir():
        if path.suffix == ".zarr" or not any((path / PARTS[part].folder).is_dir() for part in SAMPLE_PARTS):
            return None
        ids = [i for i in list_sample_ids(path) if _has_metadata(path, i)]
        if not ids:
            return None
        return path, ids[0] if len(ids) == 1 else None
    root = path.parent.parent
    found = identify(f"{path.parent.name}/{path.name}")
    if found is None or not _has_metadata(root, found[1]):
        return None
    return root, found[1]


def _remote_sample(url: str) -> tuple[str, str] | None:
    parts = url.rstrip("/").split("/")
    found = identify("/".join(parts[-2:])) if len(parts) > 2 else None
    return None if found is None else ("/".join(parts[:-2]), found[1])


def _has_metadata(root: Path, sample_id: str) -> bool:
    return PARTS[Part.METADATA].path(root, sample_id).is_file()


# --------------------------------------------------------------------------------------------- helpers


def _single_path(path: str | Path | list[str] | tuple[str, ...]) -> str | None:
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    return str(path).rstrip("/") if path else None


def _dock_browser(root: Path) -> bool:
    viewer = _current_viewer()
    if viewer is None:
        return False
    from hest_spatialdata.napari._widget import HestBrowser

    browser = HestBrowser(viewer, hest_dir=root)
    viewer.window.add_dock_widget(browser, name="HEST sample browser", area="right")
    return True


def _current_viewer() -> napari.Viewer | None:
    import napari

    return napari.current_viewer()


__all__ = [
    "find_hest_sample",
    "get_hest_reader",
    "get_store_reader",
    "read_hest_path",
    "read_store",
]
