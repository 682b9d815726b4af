"""Names shared by the readers, the writer and the tools: the output contract of a HEST store."""

from __future__ import annotations

from enum import StrEnum


class Elements(StrEnum):
    """SpatialData element names written by hest-spatialdata (README's output contract); they never change meaning."""

    HE = "he"
    SPOTS = "spots"
    TABLE = "table"
    NUCLEI = "nuclei"
    NUCLEI_LABELS = "nuclei_labels"  # the nuclei rasterised, label id = row position in nuclei + 1
    TISSUE = "tissue"
    PATCHES = "patches"
    XENIUM_CELLS = "xenium_cells"
    XENIUM_NUCLEI = "xenium_nuclei"
    TRANSCRIPTS = "transcripts"
    XENIUM_CELL_TABLE = "xenium_cell_table"


class CoordinateSystems(StrEnum):
    """Coordinate systems present on every element."""

    GLOBAL = "global"  # level-0 pixels of wsis/{id}.tif, x right, y down
    MICRONS = "microns"  # Scale(pixel_size_um_estimated) from GLOBAL


class Technology(StrEnum):
    """Normalised HEST ``st_technology`` values."""

    VISIUM = "Visium"
    VISIUM_HD = "Visium HD"
    XENIUM = "Xenium"
    ST = "Spatial Transcriptomics"


#: Key of the store-level metadata in ``SpatialData.attrs``.
ATTRS_KEY = "hest"
#: Key of ``attrs["hest"]`` listing the elements added after conversion (kind -> names), e.g. by ``embed``.
ADDED_KEY = "added"
#: Key of the metadata JSON in the table's ``uns``.
METADATA_UNS_KEY = "hest_metadata"
#: Region / instance columns linking ``table`` to ``spots``.
REGION_KEY = "region"
SPOT_INSTANCE_KEY = "spot_id"
