"""HEST-format samples for the demo, the napari sample, tests and benchmarks, written the way HEST-1k writes its files.

No real HEST slide or h5ad can be shipped, so the samples are assembled from real parts (see
``example_data/ATTRIBUTION.md``):

- the H&E texture is a real H&E tile (TIAToolbox's stain-normalisation target), mirrored and rotated at random;
- the tissue, the spots' expression and the cells are a real 10x Xenium mouse-brain run (36,602 cells, 248
  genes): cells are pooled into 55 µm Visium spots laid out on the real Visium v1 barcode whitelist;
- the metadata JSON is a real HEST ``metadata/ZEN61.json`` (Visium, mouse brain, with bare ``NaN`` tokens),
  with the sample-specific values replaced;
- the nuclei are real deep-learning segmentations (cellseg_gsontools, two 2000 px tiles) in HEST's CellViT layout,
  tiled over the tissue; the tissue contours and the patches h5 are derived from the tissue and the slide the way
  HEST derives them.

The writers mirror HEST's: ``wsis/{id}.tif`` is a libvips pyramidal tiled TIFF (256-px tiles, LZW, one page per
level, resolution tags in px/cm that are 10x off), ``st/{id}.h5ad`` has the ``uns['spatial']['ST']`` layout of
``register_downscale_img`` and ``metadata/{id}.json`` carries bare ``NaN``. Every file path comes from the layout
registry (:mod:`hest_spatialdata.source.layout`; the files are described in ``docs/hest_format.md``).

Modules, by what they write:

- :mod:`~hest_spatialdata.example.sources`: the real parts shipped in ``example_data``;
- :mod:`~hest_spatialdata.example.slide`: the H&E texture and the pyramidal TIFF;
- :mod:`~hest_spatialdata.example.common`: HEST file names, the slide frame, ``uns['spatial']``, the metadata JSON;
- :mod:`~hest_spatialdata.example.segmentation`: tissue contours, CellViT nuclei, patches h5;
- :mod:`~hest_spatialdata.example.visium`: the Visium sample (spots, st h5ad, metadata) and :func:`example_sample`;
- :mod:`~hest_spatialdata.example.cohort`: a three-sample cohort (two Visium samples of one patient, an ST sample of
  another with another gene panel), :func:`write_cohort_samples`;
- :mod:`~hest_spatialdata.example.xenium`, :mod:`~hest_spatialdata.example.xenium_cells`,
  :mod:`~hest_spatialdata.example.transcripts`: the Xenium sample (pseudo-spots and metadata, cell and nucleus
  boundaries, transcripts).
"""

from __future__ import annotations

from hest_spatialdata.example.cohort import COHORT_SAMPLES, write_cohort_samples
from hest_spatialdata.example.common import VISIUM_SPOT_DIAMETER_UM, VisiumLayout, write_metadata
from hest_spatialdata.example.segmentation import (
    CELLVIT_COLORS,
    PATCH_PIXEL_SIZE_UM,
    PATCH_SIZE_PX,
    PATCH_TISSUE_THRESHOLD,
    hest_patch_coords,
    tiled_nuclei,
    tissue_contours,
    tissue_mask,
    translated_copies,
    write_cellvit,
    write_patches,
    write_tissue_contours,
)
from hest_spatialdata.example.slide import SlideWriter, he_texture, write_slide
from hest_spatialdata.example.sources import (
    NUCLEI_TILE_FILES,
    NUCLEI_TILE_PIXEL_SIZE_UM,
    NUCLEI_TILE_SIDE_PX,
    XeniumCells,
    XeniumFeatures,
    example_data_path,
    he_tile,
    hest_metadata_template,
    nuclei_tiles,
    visium_whitelist,
    xenium_mouse_brain,
    xenium_mouse_brain_features,
)
from hest_spatialdata.example.transcripts import XENIUM_UNASSIGNED
from hest_spatialdata.example.visium import (
    EXAMPLE_PIXEL_SIZE_UM,
    EXAMPLE_SAMPLE_ID,
    VISIUM_PITCH_UM,
    example_sample,
    hest_metadata,
    hest_st_adata,
    visium_layout,
    visium_spots,
    write_visium_sample,
)
from hest_spatialdata.example.xenium import (
    XENIUM_PIXEL_SIZE_UM,
    XENIUM_PSEUDO_SPOT_UM,
    XENIUM_SAMPLE_ID,
    hest_xenium_metadata,
    hest_xenium_st_adata,
    write_xenium_sample,
)
from hest_spatialdata.example.xenium_cells import CellIdType, star_polygons, xenium_cell_ids, xenium_cells_in

__all__ = [
    "CELLVIT_COLORS",
    "COHORT_SAMPLES",
    "EXAMPLE_PIXEL_SIZE_UM",
    "EXAMPLE_SAMPLE_ID",
    "NUCLEI_TILE_FILES",
    "NUCLEI_TILE_PIXEL_SIZE_UM",
    "NUCLEI_TILE_SIDE_PX",
    "PATCH_PIXEL_SIZE_UM",
    "PATCH_SIZE_PX",
    "PATCH_TISSUE_THRESHOLD",
    "VISIUM_PITCH_UM",
    "VISIUM_SPOT_DIAMETER_UM",
    "XENIUM_PIXEL_SIZE_UM",
    "XENIUM_PSEUDO_SPOT_UM",
    "XENIUM_SAMPLE_ID",
    "XENIUM_UNASSIGNED",
    "CellIdType",
    "SlideWriter",
    "VisiumLayout",
    "XeniumCells",
    "XeniumFeatures",
    "example_data_path",
    "example_sample",
    "he_texture",
    "he_tile",
    "hest_metadata",
    "hest_metadata_template",
    "hest_patch_coords",
    "hest_st_adata",
    "hest_xenium_metadata",
    "hest_xenium_st_adata",
    "nuclei_tiles",
    "star_polygons",
    "tiled_nuclei",
    "tissue_contours",
    "tissue_mask",
    "translated_copies",
    "visium_layout",
    "visium_spots",
    "visium_whitelist",
    "write_cellvit",
    "write_cohort_samples",
    "write_metadata",
    "write_patches",
    "write_slide",
    "write_tissue_contours",
    "write_visium_sample",
    "write_xenium_sample",
    "xenium_cell_ids",
    "xenium_cells_in",
    "xenium_mouse_brain",
    "xenium_mouse_brain_features",
]
