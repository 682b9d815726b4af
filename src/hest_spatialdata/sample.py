"""``read_hest()``: assemble the elements of one HEST sample into a lazy SpatialData object."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from spatialdata import SpatialData

from hest_spatialdata._constants import ATTRS_KEY, Elements
from hest_spatialdata._version import __version__
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.layout import SampleFiles, sample_files
from hest_spatialdata.metadata import pixel_size_um, read_metadata, technology
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.readers.cellvit import read_cellvit
from hest_spatialdata.readers.patches import read_patches
from hest_spatialdata.readers.spots import read_st
from hest_spatialdata.readers.tissue import read_tissue
from hest_spatialdata.readers.wsi import DEFAULT_CHUNK_SIZE, read_wsi, slide_levels
from hest_spatialdata.readers.xenium import read_xenium_elements

#: The parts without which a sample is not a HEST sample (HEST's own reader requires them too).
REQUIRED_PARTS = {"metadata": "metadata/{id}.json", "wsi": "wsis/{id}.tif", "st": "st/{id}.h5ad"}


def read_hest(
    hest_dir: str | Path,
    sample_id: str,
    *,
    elements: Iterable[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> SpatialData:
    """Read one HEST-1k sample as a lazy SpatialData object.

    Nothing large is loaded: the slide is read tile by tile when computed or written.

    Parameters
    ----------
    hest_dir
        The HEST root (holding ``wsis/``, ``st/``, ``metadata/``, ...).
    sample_id
        The sample id, e.g. ``"TENX95"``.
    elements
        Element names to read (see :class:`hest_spatialdata._constants.Elements`); all available ones by default.
        Elements whose source file is absent are not created.
    chunk_size
        Chunk side of the image arrays in pixels.

    Returns
    -------
    The sample, with every element in the ``global`` (level-0 px) and ``microns`` coordinate systems and
    ``attrs["hest"]`` describing the source.

    Raises
    ------
    HestInputError
        For any missing, truncated or inconsistent source file; the message names the sample and the file.
    """
    wanted = _wanted_elements(elements)
    files = sample_files(hest_dir, sample_id)
    _require_parts(files, wanted)
    meta = read_metadata(files.metadata, sample_id)
    ctx = SampleContext(
        sample_id=sample_id,
        pixel_size_um=pixel_size_um(meta, sample_id, files.metadata),
        technology=technology(meta, sample_id, files.metadata),
        slide_shape=_slide_shape(files, meta),
        metadata=meta,
    )
    images: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    tables: dict[str, Any] = {}
    if Elements.HE in wanted:
        images[Elements.HE] = read_wsi(files.wsi, ctx, chunk_size=chunk_size)
    if wanted & {Elements.SPOTS, Elements.TABLE}:
        spots, table = read_st(files.st, ctx)
        shapes[Elements.SPOTS] = spots
        if Elements.TABLE in wanted:
            tables[Elements.TABLE] = table
    shapes |= _segmentation_shapes(files, ctx, wanted)
    xenium = read_xenium_elements(files, ctx, wanted)  # only the wanted parts whose files exist
    shapes |= xenium["shapes"]
    tables |= xenium["tables"]
    sdata = SpatialData(images=images, shapes=shapes, points=xenium["points"], tables=tables)
    sdata.attrs[ATTRS_KEY] = source_attrs(files, ctx) | {"elements": _element_names(sdata)}
    return sdata


def _segmentation_shapes(files: SampleFiles, ctx: SampleContext, wanted: set[Elements]) -> dict[str, Any]:
    """``nuclei``, ``tissue`` and ``patches``: each only when wanted and its source file exists."""
    readers = (
        (Elements.NUCLEI, files.cellvit, read_cellvit),
        (Elements.TISSUE, files.tissue, read_tissue),
        (Elements.PATCHES, files.patches, read_patches),
    )
    return {name.value: read(path, ctx) for name, path, read in readers if name in wanted and path is not None}


def source_attrs(files: SampleFiles, ctx: SampleContext) -> dict[str, Any]:
    """``attrs["hest"]``: what the store was made from, by which converter."""
    meta = ctx.metadata
    return {
        "sample_id": ctx.sample_id,
        "technology": ctx.technology.value,
        "st_technology": meta.get("st_technology"),
        "species": meta.get("species"),
        "organ": meta.get("organ"),
        "oncotree_code": meta.get("oncotree_code"),
        "pixel_size_um": ctx.pixel_size_um,
        "slide_shape": list(ctx.slide_shape),
        "source_files": {
            part: {"name": path.relative_to(files.root).as_posix(), "size": path.stat().st_size}
            for part, path in files.present().items()
        },
        "converter": "hest-spatialdata",
        "converter_version": __version__,
        "metadata": meta,
    }


def _element_names(sdata: SpatialData) -> dict[str, list[str]]:
    kinds = {"images": sdata.images, "labels": sdata.labels, "shapes": sdata.shapes, "points": sdata.points}
    return {kind: sorted(found) for kind, found in (kinds | {"tables": sdata.tables}).items() if found}


def _wanted_elements(elements: Iterable[str] | None) -> set[Elements]:
    if elements is None:
        return set(Elements)
    wanted = set()
    for name in elements:
        try:
            wanted.add(Elements(name))
        except ValueError:
            known = ", ".join(e.value for e in Elements)
            raise ValueError(f"unknown element {name!r}; known elements: {known}") from None
    return wanted


def _require_parts(files: SampleFiles, wanted: set[Elements]) -> None:
    needed = {"metadata"}
    if Elements.HE in wanted:
        needed.add("wsi")
    if wanted & {Elements.SPOTS, Elements.TABLE}:
        needed.add("st")
    for part in sorted(needed):
        if getattr(files, part) is None:
            expected = files.root / REQUIRED_PARTS[part].format(id=files.sample_id)
            raise HestInputError(files.sample_id, expected, f"required file missing ({REQUIRED_PARTS[part]})")


def _slide_shape(files: SampleFiles, meta: dict[str, Any]) -> tuple[int, int]:
    if files.wsi is not None:
        return slide_levels(files.wsi, files.sample_id)[0]
    width, height = meta.get("fullres_px_width"), meta.get("fullres_px_height")
    if not isinstance(width, int | float) or not isinstance(height, int | float):
        raise HestInputError(files.sample_id, files.metadata, "no slide and no fullres_px_width/height in metadata")
    return int(height), int(width)
