"""Your own 10x runs (Visium, Visium HD, Xenium) as stores in the HEST contract: :func:`import_10x`.

``hest-to-sdata import PATH -o OUT --id ID --image HE.tif`` writes ``OUT/{ID}.zarr`` exactly as ``convert`` writes
a HEST-1k sample (the README's output contract; docs/import.md): the H&E's pyramid as ``he`` in ``global`` (its
level-0 px), ``microns``, ``spots``, ``table`` (HEST's conventions), ``tissue`` (detected), ``patches`` (HEST's
rule), ``nuclei`` / ``nuclei_labels`` (with ``--nuclei``), and ``attrs["hest"]`` marked ``imported``. The store is
written by the converter's own atomic writer (:func:`hest_spatialdata.storage.store.write_store`, so URLs work) from a
:class:`~hest_spatialdata.tenx._common.TenxSource`.

Modules: ``_files`` (THE registry of the 10x file names), ``_detect`` (which technology a folder holds), ``_run``
(the request and the run a technology module is given and returns), ``_common`` (the store source, the metadata),
``_elements`` (the elements every technology shares, built with the HEST readers' functions), ``_image`` (the
H&E's levels, built lazily for a flat TIFF), ``tissue`` (tissue detection and HEST's patch rule), ``_reimport``
(a store's run read again, for ``validate``), and one module per technology: ``visium``, ``visium_hd``, ``xenium``.

The contract of a technology module
-----------------------------------
A module ``hest_spatialdata/tenx/<technology>.py``, registered in
:data:`hest_spatialdata.tenx._common.TECHNOLOGY_MODULES` (and recognised by :func:`._detect.detect`), defines:

``TECHNOLOGY``
    Its :class:`hest_spatialdata._constants.Technology`.
``read_run(request: ImportRequest, slide_shape: tuple[int, int]) -> TenxRun``
    Reads the 10x files under ``request.folder`` through spatialdata-io's reader (never re-implementing a 10x
    format) and returns a :class:`~hest_spatialdata.tenx._run.TenxRun`:

    - ``pixel_size_um``: µm per level-0 px of the H&E ``request.image``, derived as HEST derives it for the
      technology (never from the TIFF's tags);
    - ``centres``: ``(n, 2)`` float (x, y) level-0 px of the H&E, one per row of ``table``, pooled as HEST pools
      (Visium spots; Visium HD 16 µm bins summed into 128 µm squares; Xenium 100 µm pseudo-spots);
    - ``table``: an AnnData of the raw counts (``X`` as the vendor's, not normalised), ``obs_names`` the spot
      names HEST gives (barcodes, or ``rrrrxcccc`` / ``rrrxccc`` for pooled squares), ``obsm["spatial"] = centres``;
      var names as the vendor's (the common part applies HEST's var-name rule and keeps ``gene_name``);
    - ``metadata``: what HEST writes for the technology (the vendor's metrics / manifest, ``spot_diameter``,
      ``inter_spot_dist``, ...); the common part adds ``id``, ``st_technology``, ``pixel_size_um_estimated``,
      ``fullres_px_width/height``, ``spots_under_tissue`` and the user's ``--metadata``;
    - ``source_files`` (role -> path) and ``positions_file`` (named when centres fall off the H&E);
    - optionally ``extra_names`` and ``extra(ctx, wanted) -> {name: element}``: the technology's own elements
      (Xenium: ``xenium_cells``, ``xenium_nuclei``, ``transcripts``, ``xenium_cell_table``), built lazily, in level-0
      px of the H&E (``ctx.transformations()`` on each), as the HEST readers build them.

    It must not read the H&E's pixels (the common part streams them), and raises
    :class:`hest_spatialdata.errors.HestInputError` naming the sample and the file for any bad input (a missing
    file, an unknown chemistry, an H&E whose size does not fit the run), before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata.storage.store import DEFAULT_RASTER_COMPRESSOR

if TYPE_CHECKING:
    from upath import UPath

    from hest_spatialdata.storage.locations import StoreLocation

__all__ = ["import_10x"]


def import_10x(
    path: str | Path,
    out_dir: str | Path | UPath | StoreLocation,
    sample_id: str,
    *,
    image: str | Path | None = None,
    alignment: str | Path | None = None,
    nuclei: str | Path | None = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    elements: Iterable[str] | None = None,
    chunk_size: int | None = None,
    raster_compressor: dict[str, int] | None = DEFAULT_RASTER_COMPRESSOR,
    storage_options: Mapping[str, Any] | None = None,
) -> Path | UPath:
    """Import a 10x run (Visium, Visium HD or Xenium) into ``out_dir/{sample_id}.zarr``, in the HEST contract.

    Parameters
    ----------
    path
        The Space Ranger run folder or its ``outs/``, or the Xenium output bundle.
    out_dir
        Output folder or URL (``s3://bucket/prefix``): written atomically as ``convert`` writes.
    sample_id
        The store's id (``{sample_id}.zarr``), the sample's id in cohorts.
    image
        The full-resolution H&E (TIFF, OME-TIFF, SVS: RGB uint8). Default: the largest TIFF/SVS next to the outputs.
    alignment
        Visium: a Loupe alignment JSON (spot centres from it); Xenium: the Xenium Explorer alignment CSV.
    nuclei
        A nuclei segmentation on the H&E: CellViT GeoJSON (as HEST ships it), any GeoJSON of polygons, GeoParquet.
    metadata
        Metadata for cohort filters and folds (``organ``, ``species``, ``patient``, ``oncotree_code``, ...).
    overwrite
        Replace an existing store.
    elements
        Element names to write; all by default.
    chunk_size
        Image chunk side in pixels (default 1024).
    raster_compressor
        As for :func:`hest_spatialdata.storage.store.convert_sample`.
    storage_options
        fsspec options of a URL ``out_dir``.

    Returns
    -------
    The store's path.

    Raises
    ------
    HestInputError
        For a folder that is no 10x output, a missing or mismatched H&E, an unknown chemistry ... (nothing written).
    StoreExistsError
        If the store exists and ``overwrite`` is false.
    """
    from hest_spatialdata.storage.locations import StoreLocation
    from hest_spatialdata.storage.store import write_store
    from hest_spatialdata.tenx._common import TenxSource, find_image
    from hest_spatialdata.tenx._detect import find_outputs
    from hest_spatialdata.tenx._run import ImportRequest

    technology, folder = find_outputs(path, sample_id)
    request = ImportRequest(
        path=Path(path),
        folder=folder,
        sample_id=sample_id,
        image=Path(image) if image is not None else find_image(folder, sample_id),
        alignment=None if alignment is None else Path(alignment),
        nuclei=None if nuclei is None else Path(nuclei),
        metadata=dict(metadata or {}),
    )
    target = StoreLocation.of(out_dir, storage_options)  # parsed once; a StoreLocation passes as it is
    options = {"elements": elements, "chunk_size": chunk_size, "raster_compressor": raster_compressor}
    return write_store(TenxSource(request, technology), target, overwrite=overwrite, **options)
