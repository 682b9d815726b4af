"""A raw 10x Xenium output bundle in the HEST contract: the run warped onto its post-Xenium H&E, as HEST does it.

The bundle's boundaries and cell table are read by spatialdata-io's ``xenium`` reader (its label rasters, morphology
images and transcripts left out); this module places them and the transcripts on the H&E and pools them as HEST's
``XeniumReader`` does (mahmoodlab/HEST ``src/hest/readers.py`` @ afd42c3; ``docs/import.md``, "Xenium"):

- the alignment is Xenium Explorer's (:mod:`~hest_spatialdata.tenx.xenium_alignment`): cells, nuclei and
  transcripts go from Xenium µm to H&E px by HEST's ``align_xenium_df``; the H&E pixel size is HEST's estimate;
- ``transcripts``: every transcript at (he_x, he_y), columns as a converted HEST sample's;
- ``xenium_cells`` / ``xenium_nuclei``: the boundaries warped, indexed by the Xenium cell id as ``str``;
- ``xenium_cell_table``: cells x genes counted from the transcripts as for a converted HEST sample
  (:class:`~hest_spatialdata.readers.transcripts.CellCounter`: ``qv >= 20``, genes in ``X``, controls in ``obs``),
  which gives back 10x's ``cell_feature_matrix`` for the genes;
- the st AnnData: HEST's 100 µm pseudo-spots (:mod:`~hest_spatialdata.tenx.pseudo_spots`), every transcript
  pooled; and the metadata HEST writes for a Xenium sample (``experiment.xenium`` merged in).

The transcripts are never all in memory: their extent and feature names, then the counts, are two pyarrow passes
over the parquet in batches; the ``transcripts`` element is the parquet read lazily a row group at a time and mapped
onto the H&E (:func:`~hest_spatialdata.readers.transcripts.lazy_points`, as for a converted sample's).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from spatialdata.models import ShapesModel

from hest_spatialdata._constants import Elements, Technology
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import check_extent_on_slide, check_geometries_on_slide, reason, warn
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.readers.transcripts import (
    BATCH_ROWS,
    DEFAULT_MIN_QV,
    CellCounter,
    dictionary_names,
    feature_codes,
    lazy_points,
)
from hest_spatialdata.readers.xenium_seg import CELL_ID_KEY, cell_id_strings
from hest_spatialdata.tenx import _files as files
from hest_spatialdata.tenx.pseudo_spots import PSEUDO_SPOT_UM, PseudoSpotGrid, PseudoSpotPooler
from hest_spatialdata.tenx.xenium_alignment import XeniumToHE, read_alignment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from hest_spatialdata.tenx._run import ImportRequest, TenxRun

TECHNOLOGY = Technology.XENIUM
FEATURE_NAME = "feature_name"
#: spatialdata-io's names of the bundle's elements.
_SDIO_CELLS, _SDIO_NUCLEI, _SDIO_TABLE = "cell_boundaries", "nucleus_boundaries", "table"


@dataclass
class XeniumRun:
    """A Xenium run placed on its H&E: the HEST elements, the st AnnData and the metadata HEST writes."""

    folder: Path
    alignment: Path
    pixel_size_um: float
    st: ad.AnnData  # HEST's pseudo-spots (st h5ad), before the store's table conventions
    metadata: dict[str, Any]  # HEST's Xenium keys (experiment.xenium merged in)
    elements: dict[str, Any] = field(default_factory=dict)  # transcripts, xenium_cells, xenium_nuclei, cell table


def read_run(request: ImportRequest, slide_shape: tuple[int, int]) -> TenxRun:
    """The contract of a technology module (:mod:`hest_spatialdata.tenx`): :func:`read_xenium` as a ``TenxRun``."""
    from hest_spatialdata.tenx._run import TenxRun

    run = read_xenium(request.folder, sample_id=request.sample_id, slide_shape=slide_shape,
                      alignment=request.alignment)  # fmt: skip
    names = (*files.XENIUM_REQUIRED, files.XENIUM_CELL_BOUNDARIES, files.XENIUM_NUCLEUS_BOUNDARIES)
    sources = {name.split(".")[0]: run.folder / name for name in names if (run.folder / name).is_file()}
    return TenxRun(
        technology=TECHNOLOGY,
        pixel_size_um=run.pixel_size_um,
        centres=np.asarray(run.st.obsm["spatial"], dtype=np.float64),
        table=run.st,
        metadata=run.metadata,
        source_files=sources | {"alignment": run.alignment},
        positions_file=run.folder / files.XENIUM_TRANSCRIPTS,
        extra_names=tuple(run.elements),
        extra=partial(_wanted, run.elements),
    )


def _wanted(elements: dict[str, Any], ctx: SampleContext, wanted: frozenset[str]) -> dict[str, Any]:
    """The run's own elements that are wanted (built in ``ctx``'s frames: the same pixel size)."""
    return {name: element for name, element in elements.items() if name in wanted}


def find_alignment(folder: Path, alignment: str | Path | None, sample_id: str | None) -> Path:
    """The alignment CSV: the one given, else the only ``*imagealignment.csv`` of the bundle (HEST's rule).

    Raises
    ------
    HestInputError
        If none is given and the bundle holds none or several.
    """
    if alignment is not None:
        path = Path(alignment)
        if not path.is_file():
            raise HestInputError(sample_id, path, "alignment CSV not found")
        return path
    found = sorted(p for p in folder.iterdir() if p.name.endswith(files.XENIUM_ALIGNMENT_SUFFIX))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise HestInputError(sample_id, folder, f"{what} *{files.XENIUM_ALIGNMENT_SUFFIX} in the Xenium bundle: give "
                             "the H&E's alignment (Xenium Explorer's matrix CSV) with --alignment")  # fmt: skip
    return found[0]


def read_manifest(folder: Path, sample_id: str | None) -> dict[str, Any]:
    """``experiment.xenium`` with a positive ``pixel_size`` (µm per morphology px)."""
    path = folder / files.XENIUM_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        pixel_size = float(manifest["pixel_size"])
    except FileNotFoundError as e:
        raise HestInputError(sample_id, path, "Xenium manifest not found") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HestInputError(sample_id, path, f"Xenium manifest unreadable or without pixel_size ({reason(e)})") from e
    if not math.isfinite(pixel_size) or pixel_size <= 0:
        raise HestInputError(sample_id, path, f"Xenium manifest's pixel_size is {pixel_size}, not a positive size")
    return manifest


def check_bundle(folder: Path, sample_id: str | None) -> None:
    """Raise, naming the first missing file, unless the bundle holds every file the import reads."""
    for name in files.XENIUM_REQUIRED:
        if not (folder / name).is_file():
            raise HestInputError(sample_id, folder / name, "file of the Xenium output bundle not found")


def read_xenium(
    folder: str | Path,
    *,
    sample_id: str,
    slide_shape: tuple[int, int],
    alignment: str | Path | None = None,
    spot_size_um: float = PSEUDO_SPOT_UM,
    min_qv: float = DEFAULT_MIN_QV,
) -> XeniumRun:
    """Read a Xenium output bundle and place it on its post-Xenium H&E (level-0 px).

    Parameters
    ----------
    folder
        The Xenium output folder (``experiment.xenium``, ``transcripts.parquet``, ``cells.parquet``, ...).
    sample_id
        The store's sample id, for messages.
    slide_shape
        ``(height, width)`` of the H&E's level 0: every element must fall on it.
    alignment
        Xenium Explorer's alignment CSV (H&E px -> morphology px); default: the bundle's ``*imagealignment.csv``.
    spot_size_um
        Side of HEST's pseudo-spots.
    min_qv
        Lowest transcript quality counted in ``xenium_cell_table`` (10x's 20).

    Returns
    -------
    The elements (lazy transcripts), the pseudo-spot AnnData and the metadata.

    Raises
    ------
    HestInputError
        For a missing or unreadable file of the bundle or alignment, or an alignment putting the run off the slide.
    """
    folder = Path(folder)
    check_bundle(folder, sample_id)
    manifest = read_manifest(folder, sample_id)
    alignment_path = find_alignment(folder, alignment, sample_id)
    warp = XeniumToHE(read_alignment(alignment_path, sample_id), float(manifest["pixel_size"]))
    ctx = SampleContext(sample_id, warp.pixel_size_um, Technology.XENIUM, tuple(slide_shape))
    sdata = _read_with_spatialdata_io(folder, sample_id)
    elements: dict[str, Any] = {}
    for name, source in ((Elements.XENIUM_CELLS, _SDIO_CELLS), (Elements.XENIUM_NUCLEI, _SDIO_NUCLEI)):
        if source in sdata.shapes:
            elements[name.value] = warped_boundaries(sdata.shapes[source], warp, ctx, alignment_path)
    transcripts_path = folder / files.XENIUM_TRANSCRIPTS
    columns = _transcript_columns(transcripts_path, ctx)
    *extent, categories = _scan_transcripts(transcripts_path, warp, ctx, alignment_path)
    pooler = PseudoSpotPooler(PseudoSpotGrid.covering(*extent, ctx.pixel_size_um, spot_size_um), len(categories))
    cells = elements.get(Elements.XENIUM_CELLS.value)
    counter = None
    if cells is not None and CELL_ID_KEY in columns:
        counter = CellCounter(pd.Index(cells.index, dtype=object), categories, min_qv)
    elif cells is not None:
        warn(ctx, transcripts_path, "the transcripts have no cell_id column; xenium_cell_table not written")
    _count(transcripts_path, warp, categories, pooler, counter, columns, ctx)
    xy = (files.XENIUM_X, files.XENIUM_Y)
    elements[Elements.TRANSCRIPTS.value] = lazy_points(transcripts_path, xy, categories, ctx, affine=warp.affine)
    if counter is not None:
        elements[Elements.XENIUM_CELL_TABLE.value] = counter.table(cells, transcripts_path, ctx)
    st = pooler.adata(categories)
    n_cells = sdata.tables[_SDIO_TABLE].n_obs if _SDIO_TABLE in sdata.tables else None
    metadata = xenium_metadata(manifest, st, spot_size_um, n_cells)
    return XeniumRun(folder, alignment_path, ctx.pixel_size_um, st, metadata, elements)


def _read_with_spatialdata_io(folder: Path, sample_id: str) -> Any:
    """spatialdata-io's ``xenium`` reader with only what the import uses: the boundaries and the cell table.

    Not its transcripts: its frame is one partition per file (dask's default for a file of dictionary-encoded
    columns under 256 MiB uncompressed, ten million transcripts and more) and decodes every feature name into a
    Python string, so writing it held the whole file, about 200 bytes a transcript (docs/import.md).
    """
    import spatialdata_io

    try:
        with warnings.catch_warnings():
            # the cell table annotates the label rasters, which the import does not read
            warnings.filterwarnings("ignore", message="The table is annotating 'cell_labels'", category=UserWarning)
            return spatialdata_io.xenium(
                folder, cells_boundaries=(folder / files.XENIUM_CELL_BOUNDARIES).is_file(),
                nucleus_boundaries=(folder / files.XENIUM_NUCLEUS_BOUNDARIES).is_file(), cells_as_circles=False,
                cells_labels=False, nucleus_labels=False, transcripts=False, morphology_mip=False,
                morphology_focus=False, aligned_images=False, cells_table=True,
            )  # fmt: skip
    except Exception as e:  # spatialdata-io raises whatever its readers raise (OSError, KeyError, ArrowInvalid ...)
        raise HestInputError(sample_id, folder, f"spatialdata-io could not read the Xenium bundle ({reason(e)})") from e


# --------------------------------------------------------------------------------------------- elements


def warped_boundaries(
    shapes: gpd.GeoDataFrame, warp: XeniumToHE, ctx: SampleContext, alignment: Path
) -> gpd.GeoDataFrame:
    """spatialdata-io's boundaries (Xenium µm) warped onto the H&E, indexed by the cell id as ``str``.

    XOA >= 2 nuclei come indexed by their label with a ``cell_id`` column: they are indexed by the cell id, the
    nuclei of a multinucleate cell joined into one MultiPolygon (HEST's ``groupby_shape`` groups them by cell id).

    Raises
    ------
    HestInputError
        If the warped polygons leave the slide (naming the alignment).
    """
    ids = shapes[CELL_ID_KEY] if CELL_ID_KEY in shapes.columns else shapes.index
    index = pd.Index(cell_id_strings(pd.Series(ids).to_numpy()).to_pandas(), dtype=str)
    gdf = gpd.GeoDataFrame(geometry=gpd.GeoSeries(warp.geometries(shapes.geometry.to_numpy()), index=index))
    if not index.is_unique:
        gdf = gdf.dissolve(level=0, sort=False)
        gdf.index = pd.Index(gdf.index, dtype=str)
    check_geometries_on_slide(gdf.geometry.to_numpy(), ctx, alignment,
                              what="Xenium boundaries warped by this alignment")  # fmt: skip
    return ShapesModel.parse(gdf, transformations=ctx.transformations())


def _transcript_batches(path: Path, columns: list[str], ctx: SampleContext) -> Iterator[pa.RecordBatch]:
    """The transcripts' ``columns``, :data:`BATCH_ROWS` rows at a time (feature names dictionary-encoded, as stored)."""
    try:
        parquet = pq.ParquetFile(path, read_dictionary=[FEATURE_NAME])
        yield from parquet.iter_batches(batch_size=BATCH_ROWS, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise HestInputError(ctx.sample_id, path, f"transcripts parquet unreadable or corrupt ({reason(e)})") from e


def _transcript_columns(path: Path, ctx: SampleContext) -> list[str]:
    """The columns of ``transcripts.parquet``; raises if it is unreadable or lacks a position or the feature name."""
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as e:
        raise HestInputError(ctx.sample_id, path, f"transcripts parquet unreadable or corrupt ({reason(e)})") from e
    missing = [c for c in (files.XENIUM_X, files.XENIUM_Y, FEATURE_NAME) if c not in names]
    if missing:
        raise HestInputError(ctx.sample_id, path, f"transcripts lack the column(s) {', '.join(missing)}")
    return names


def _scan_transcripts(
    path: Path, warp: XeniumToHE, ctx: SampleContext, alignment: Path
) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """The transcripts' (x, y) minimum and maximum on the H&E and every feature name (sorted).

    Raises
    ------
    HestInputError
        If no transcript has a finite position, or they leave the slide (naming the alignment).
    """
    lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
    names: set[str] = set()
    for batch in _transcript_batches(path, [files.XENIUM_X, files.XENIUM_Y, FEATURE_NAME], ctx):
        names.update(dictionary_names(batch.column(FEATURE_NAME)))
        if batch.num_rows:
            xy = warp.points(batch.column(files.XENIUM_X).to_numpy(), batch.column(files.XENIUM_Y).to_numpy())
            lo, hi = np.minimum(lo, xy.min(axis=0)), np.maximum(hi, xy.max(axis=0))
    if not np.isfinite(lo).all():
        raise HestInputError(ctx.sample_id, path, "the transcripts parquet holds no transcript with a finite position")
    check_extent_on_slide(lo, hi, ctx, alignment, what="transcripts warped by this alignment")
    return lo, hi, pd.Index(sorted(names), dtype=str)


def _count(
    path: Path,
    warp: XeniumToHE,
    categories: pd.Index,
    pooler: PseudoSpotPooler,
    counter: CellCounter | None,
    names: list[str],
    ctx: SampleContext,
) -> None:
    """Stream the transcripts once into the pseudo-spots (every transcript) and the cell counts (``qv >= 20``).

    ``names``: the file's columns; ``counter`` is ``None`` where it has no ``cell_id``.
    """
    quality = ["qv"] if "qv" in names else []
    ids = [CELL_ID_KEY] if counter is not None else []
    for batch in _transcript_batches(path, [files.XENIUM_X, files.XENIUM_Y, FEATURE_NAME, *ids, *quality], ctx):
        xy = warp.points(batch.column(files.XENIUM_X).to_numpy(), batch.column(files.XENIUM_Y).to_numpy())
        pooler.add(xy, feature_codes(batch.column(FEATURE_NAME), categories))
        if counter is not None:
            counter.add(batch.select([CELL_ID_KEY, FEATURE_NAME, *quality]))


# --------------------------------------------------------------------------------------------- metadata


def xenium_metadata(
    manifest: dict[str, Any], st: ad.AnnData, spot_size_um: float, n_cells: int | None
) -> dict[str, Any]:
    """The Xenium keys of the metadata HEST's ``XeniumReader.read`` and ``HESTData.save`` write.

    ``experiment.xenium`` merged in whole, ``spot_diameter`` and ``inter_spot_dist`` (the pseudo-spot side),
    ``cells_under_tissue`` (cells of ``cell_feature_matrix.h5``) and ``adata_nb_col``. The keys every import computes
    (``pixel_size_um_estimated``, ``spots_under_tissue``, ``fullres_px_width`` / ``height``, ``st_technology``, ``id``)
    are added by :class:`hest_spatialdata.tenx._common.TenxSource`. (HEST also writes the TIFF's resolution tag as
    ``pixel_size_um_embedded``; it is left out: docs/hest_format.md section 2.)
    """
    meta = {**manifest, "spot_diameter": spot_size_um, "inter_spot_dist": spot_size_um, "adata_nb_col": int(st.n_vars)}
    if n_cells is not None:
        meta["cells_under_tissue"] = int(n_cells)
    return meta
