"""THE registry of the 10x output files the importer reads (Space Ranger ``outs/``, Xenium bundles).

One place, so that a renamed file is one more name here.
"""

from __future__ import annotations

#: Files and folders of a Space Ranger (Visium) ``outs/`` folder, newest name first where two exist.
FILTERED_H5 = "filtered_feature_bc_matrix.h5"
RAW_H5 = "raw_feature_bc_matrix.h5"
#: MatrixMarket folders (``matrix.mtx[.gz]``, ``features.tsv[.gz]`` / ``genes.tsv``, ``barcodes.tsv[.gz]``).
FILTERED_MEX = "filtered_feature_bc_matrix"
RAW_MEX = "raw_feature_bc_matrix"
MEX_MATRIX = ("matrix.mtx.gz", "matrix.mtx")
SPATIAL = "spatial"
SCALEFACTORS = "scalefactors_json.json"
#: Space Ranger >= 2 (with a header) and Space Ranger 1 (without); Visium HD writes a Parquet.
TISSUE_POSITIONS = ("tissue_positions.csv", "tissue_positions_list.csv")
TISSUE_POSITIONS_PARQUET = "tissue_positions.parquet"
METRICS = "metrics_summary.csv"
#: Visium HD: ``binned_outputs/square_{002,008,016}um/`` each a Space Ranger-like folder.
BINNED_OUTPUTS = "binned_outputs"
HD_BIN_FOLDER = "square_{size:03d}um"
HD_BIN_SIZES_UM = (2, 8, 16)
#: Xenium output bundle: its manifest, the files spatialdata-io's ``xenium()`` opens whatever is asked, and the
#: boundaries (optional).
XENIUM_MANIFEST = "experiment.xenium"
XENIUM_TRANSCRIPTS = "transcripts.parquet"
#: The transcripts' position columns (µm in the Xenium frame).
XENIUM_X, XENIUM_Y = "x_location", "y_location"
XENIUM_REQUIRED = (XENIUM_MANIFEST, XENIUM_TRANSCRIPTS, "cells.parquet", "cell_feature_matrix.h5", "cells.zarr.zip")
XENIUM_CELL_BOUNDARIES = "cell_boundaries.parquet"
XENIUM_NUCLEUS_BOUNDARIES = "nucleus_boundaries.parquet"
#: Xenium Explorer's alignment export ends so (``{name}_imagealignment.csv``); HEST finds it by this ending.
XENIUM_ALIGNMENT_SUFFIX = "imagealignment.csv"
#: Full-resolution images found next to the outputs when ``--image`` is not given (HEST's ``find_biggest_img``).
IMAGE_SUFFIXES = (".tif", ".tiff", ".btf", ".ome.tif", ".ome.tiff", ".svs")
