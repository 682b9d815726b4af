"""The elements of an imported run, built with the HEST readers' own functions (the same contract)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from hest_spatialdata._constants import Elements
from hest_spatialdata.readers._checks import check_unique
from hest_spatialdata.readers._context import SampleContext

#: The class of the nuclei of a segmentation without classes (any GeoJSON of polygons).
UNCLASSIFIED = "Unclassified"

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

    from hest_spatialdata.tenx._run import ImportRequest, TenxRun
    from hest_spatialdata.writer.image import Level


def build_elements(
    run: TenxRun, levels: Sequence[Level], ctx: SampleContext, request: ImportRequest, wanted: frozenset[str]
) -> SpatialData:
    """Every wanted element but ``he``: spots, table, tissue, patches, nuclei (with ``--nuclei``) and the run's own.

    Parameters
    ----------
    run
        What the technology module read.
    levels
        The H&E's levels (tissue is detected on a coarse one).
    ctx
        The sample's context (pixel size, slide size, metadata, chunk size).
    request
        The import request (the nuclei file).
    wanted
        Element names to build.
    """
    from spatialdata import SpatialData

    from hest_spatialdata.readers.spots import spot_shapes, spot_table
    from hest_spatialdata.tenx.tissue import detect_tissue, patch_footprints

    names = pd.Index(run.table.obs_names, dtype=str)
    check_unique(names, ctx, run.source_files.get("counts", request.folder), what="spot barcodes")
    elements: dict[str, Any] = {}
    if {Elements.SPOTS, Elements.TABLE} & wanted:
        elements[Elements.SPOTS.value] = spot_shapes(run.centres, names, ctx)  # the table annotates them
    if Elements.TABLE in wanted:
        elements[Elements.TABLE.value] = spot_table(run.table, ctx)
    if {Elements.TISSUE, Elements.PATCHES} & wanted:
        tissue = detect_tissue(levels, ctx)
        if tissue is not None and Elements.TISSUE in wanted:
            elements[Elements.TISSUE.value] = tissue
        patches = patch_footprints(run.centres, names, tissue, ctx) if Elements.PATCHES in wanted else None
        if patches is not None:
            elements[Elements.PATCHES.value] = patches
    if request.nuclei is not None and {Elements.NUCLEI, Elements.NUCLEI_LABELS} & wanted:
        from hest_spatialdata.readers.cellvit import read_cellvit
        from hest_spatialdata.readers.nuclei_labels import rasterise_nuclei

        nuclei = read_cellvit(request.nuclei, ctx, default_class=UNCLASSIFIED)
        if Elements.NUCLEI in wanted:
            elements[Elements.NUCLEI.value] = nuclei
        if Elements.NUCLEI_LABELS in wanted:
            elements[Elements.NUCLEI_LABELS.value] = rasterise_nuclei(nuclei, ctx)
    extra = wanted & set(run.extra_names)
    if extra and run.extra is not None:
        elements |= run.extra(ctx, frozenset(extra))
    sdata = SpatialData()
    for name, element in elements.items():
        sdata[name] = element
    return sdata
