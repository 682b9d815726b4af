"""``read_hest()``: assemble the elements of one HEST sample into a lazy SpatialData object."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata._constants import ATTRS_KEY, Elements
from hest_spatialdata._version import __version__
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers import reader_module
from hest_spatialdata.readers._context import DEFAULT_CHUNK_SIZE, SampleContext
from hest_spatialdata.readers.wsi import slide_levels
from hest_spatialdata.roots.samples import SampleFiles, sample_files
from hest_spatialdata.source.layout import PARTS, Part, readable_parts
from hest_spatialdata.source.metadata import pixel_size_um, read_metadata, technology

if TYPE_CHECKING:
    from spatialdata import SpatialData


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
    from spatialdata import SpatialData

    from hest_spatialdata.readers.nuclei_labels import LABEL_ID_RULE

    wanted = _wanted_elements(elements)
    files = sample_files(hest_dir, sample_id)
    files.require(Part.METADATA)
    plan = _reading_plan(files, wanted)
    ctx = _sample_context(files, _readable_files(files, plan, wanted), chunk_size)
    sdata = SpatialData()
    for part, (_, want) in plan.items():
        path = ctx.files.paths[part]  # in a remote root, a small part's local copy
        for name, element in reader_module(PARTS[part].reader).read(path, ctx, want).items():
            sdata[name] = element
    sdata.attrs[ATTRS_KEY] = source_attrs(files, ctx) | {"elements": _element_names(sdata)}
    if Elements.NUCLEI_LABELS in sdata.labels:
        sdata.attrs[ATTRS_KEY]["nuclei_labels"] = LABEL_ID_RULE
    if "spots" in ctx.shared and Elements.SPOTS in sdata.shapes:
        sdata.attrs[ATTRS_KEY]["spots"] = ctx.shared["spots"]  # the square pseudo-spots' side (readers/spots.py)
    return sdata


def sample_source_attrs(hest_dir: str | Path, sample_id: str) -> dict[str, Any]:
    """``attrs["hest"]`` of the sample's store (``elements`` left empty), without reading any element.

    For writers that write the elements themselves (:func:`hest_spatialdata.storage.store.convert_sample` writes a slide
    alone without importing spatialdata).

    Raises
    ------
    HestInputError
        If the metadata JSON (or the slide, for its size) is missing or bad.
    """
    files = sample_files(hest_dir, sample_id)
    files.require(Part.METADATA)
    return source_attrs(files, _sample_context(files, files, DEFAULT_CHUNK_SIZE)) | {"elements": {}}


def _sample_context(files: SampleFiles, readable: SampleFiles, chunk_size: int) -> SampleContext:
    metadata_path = files.require(Part.METADATA)
    if files.remote:
        metadata_path = metadata_path.local_copy()
    meta = read_metadata(metadata_path, files.sample_id)
    return SampleContext(
        sample_id=files.sample_id,
        pixel_size_um=pixel_size_um(meta, files.sample_id, metadata_path),
        technology=technology(meta, files.sample_id, metadata_path),
        slide_shape=_slide_shape(files, meta),
        metadata=meta,
        files=readable,
        chunk_size=chunk_size,
    )


def _readable_files(files: SampleFiles, plan: dict[Part, Any], wanted: set[Elements]) -> SampleFiles:
    """The files the readers get: those of a local root as they are.

    In a remote root the parts read by byte ranges (``PartSpec.ranged``) stay remote, and the others to read (and
    the parts they join) are copied locally, through the hub cache.
    """
    if not files.remote:
        return files
    needed = set(plan)
    for part in plan:
        for element in wanted & set(PARTS[part].elements):
            needed |= set(PARTS[part].joins.get(element, ()))
    paths = {
        part: path if PARTS[part].ranged or part not in needed else path.local_copy()
        for part, path in files.paths.items()
    }
    return SampleFiles(root=files.root, sample_id=files.sample_id, paths=paths)


def _reading_plan(files: SampleFiles, wanted: set[Elements]) -> dict[Part, tuple[Path, frozenset[Elements]]]:
    """For each part to read: its file and the elements wanted from it; a required part absent raises."""
    plan = {}
    for part, spec in readable_parts():
        want = frozenset(wanted & set(spec.elements))
        if not want:
            continue
        path = files.require(part) if spec.required else files.get(part)
        if path is not None:
            plan[part] = (path, want)
    return plan


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
        "source_files": {part: {"name": files.relative(part), "size": files.size(part)} for part in files.present()},
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


def _slide_shape(files: SampleFiles, meta: dict[str, Any]) -> tuple[int, int]:
    wsi = files.get(Part.WSI)
    if wsi is not None:
        return slide_levels(wsi, files.sample_id)[0]
    width, height = meta.get("fullres_px_width"), meta.get("fullres_px_height")
    if not isinstance(width, int | float) or not isinstance(height, int | float):
        raise HestInputError(
            files.sample_id, files.get(Part.METADATA), "no slide and no fullres_px_width/height in metadata"
        )
    return int(height), int(width)
