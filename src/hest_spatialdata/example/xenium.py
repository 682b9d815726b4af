"""The Xenium example: a HEST-1k Xenium sample built from the real Xenium mouse-brain run.

Written as HEST writes it (its ``XeniumReader`` / ``pool_transcripts_xenium``, ``HESTData.save`` and
``copy_processed``): every count of the real cell x feature matrix (genes and control probes/codewords) becomes
one transcript placed inside its cell (:mod:`~hest_spatialdata.example.transcripts`), the cells are polygons around
the real centroids with the real cell and nucleus areas (:mod:`~hest_spatialdata.example.xenium_cells`), and the
st h5ad is HEST's 100 µm pseudo-Visium pooling of those transcripts.
"""

from __future__ import annotations

import math
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from hest_spatialdata.example.common import (
    VisiumLayout,
    register_downscale_img,
    sample_fields,
    write_metadata,
)
from hest_spatialdata.example.slide import SlideWriter, he_texture, write_slide
from hest_spatialdata.example.sources import hest_metadata_template, xenium_mouse_brain, xenium_mouse_brain_features
from hest_spatialdata.example.transcripts import TranscriptWriter, write_cell_chunk
from hest_spatialdata.example.xenium_cells import CellIdType, write_xenium_seg, xenium_cells_in, xenium_sample_cells
from hest_spatialdata.source.layout import PARTS, Part

XENIUM_SAMPLE_ID = "XENIUM1"
#: A 20x scan; real HEST Xenium slides are 0.21-0.27 µm/px (40x), coarser keeps fixtures fast.
XENIUM_PIXEL_SIZE_UM = 0.5
#: HEST pools Xenium transcripts into squares of this side (µm); the h5ad's spot_diameter_fullres says 55 µm.
XENIUM_PSEUDO_SPOT_UM = 100.0


def _xenium_layout(x_um: np.ndarray, y_um: np.ndarray, pixel_size_um: float, margin_um: float) -> VisiumLayout:
    x0, y0 = x_um.min() - margin_um, y_um.min() - margin_um
    width = math.ceil((x_um.max() + margin_um - x0) / pixel_size_um)
    height = math.ceil((y_um.max() + margin_um - y0) / pixel_size_um)
    return VisiumLayout(pixel_size_um, (x0, y0), height, width)


def _cells_mask(layout: VisiumLayout, xy_px: np.ndarray, bin_um: float = 50.0) -> np.ndarray:
    from scipy import ndimage

    side = bin_um / layout.pixel_size_um
    mask = np.zeros((math.ceil(layout.height / side), math.ceil(layout.width / side)), bool)
    mask[(xy_px[:, 1] // side).astype(int), (xy_px[:, 0] // side).astype(int)] = True
    return ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))


def hest_xenium_st_adata(
    he_xy: np.ndarray,
    codes: np.ndarray,
    names: pd.Index,
    slide: np.ndarray,
    pixel_size_um: float,
    pseudo_spot_um: float = XENIUM_PSEUDO_SPOT_UM,
) -> ad.AnnData:
    """HEST's ``pool_transcripts_xenium``: transcripts summed into 100 µm squares on a grid from their min x/y.

    ``X`` is the dense uint16 grid, var order is the order of first appearance of each feature in the file,
    obs names ``"{row:03d}x{col:03d}"`` are grid positions, empty squares are dropped (``sc.pp.filter_cells``,
    which adds ``n_counts``), and ``uns['spatial']['ST']`` is ``register_downscale_img``'s (with HEST's default
    55 µm ``spot_diameter_fullres``, although the squares are 100 µm).

    Parameters
    ----------
    he_xy
        (n, 2) ``he_x``, ``he_y`` of every transcript (level-0 px), in file order.
    codes
        (n,) feature position of every transcript in ``names``.
    names
        Feature names.
    slide, pixel_size_um
        The slide's level 0 ((h, w, 3) uint8) and its µm per pixel.
    pseudo_spot_um
        Side of the squares (HEST pooled TENX122 and NCBI784 at about 58 µm, HEST issue 122).

    Returns
    -------
    The pseudo-spot AnnData.
    """
    side = pseudo_spot_um / pixel_size_um
    (x_min, y_min), (x_max, y_max) = he_xy.min(axis=0), he_xy.max(axis=0)
    m, n = math.ceil((y_max - y_min) / side), math.ceil((x_max - x_min) / side)
    used, first = np.unique(codes, return_index=True)
    features = used[np.argsort(first)]  # pandas' unique(): order of appearance
    column = np.full(len(names), -1)
    column[features] = np.arange(len(features))
    a = np.floor((he_xy[:, 0] - x_min) / side).astype(np.int64)
    b = np.floor((he_xy[:, 1] - y_min) / side).astype(np.int64)
    grid = np.bincount((b * n + a) * len(features) + column[codes], minlength=m * n * len(features))
    grid = grid.reshape(-1, len(features)).astype(np.uint16)  # wraps like HEST's np.add.at on uint16
    totals = grid.sum(axis=1, dtype=np.uint64)
    keep = np.flatnonzero(totals >= 1)
    obs = pd.DataFrame(
        {
            "in_tissue": True,
            "pxl_col_in_fullres": x_min + (keep % n) * side + side / 2,
            "pxl_row_in_fullres": y_min + (keep // n) * side + side / 2,
            "array_col": keep % n,
            "array_row": keep // n,
            "n_counts": totals[keep],
        },
        index=pd.Index([f"{r:03d}x{c:03d}" for r, c in zip(keep // n, keep % n, strict=True)], dtype=str),
    )
    adata = ad.AnnData(X=grid[keep], obs=obs, var=pd.DataFrame(index=pd.Index(names[features], dtype=str)))
    adata.obsm["spatial"] = obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    _xenium_qc(adata)
    register_downscale_img(adata, slide, pixel_size_um)
    return adata


def _xenium_qc(adata: ad.AnnData) -> None:
    x = adata.X.astype(np.int64)
    adata.obs["n_genes_by_counts"] = (x > 0).sum(axis=1)
    adata.obs["total_counts"] = x.sum(axis=1)
    adata.obs["log1p_total_counts"] = np.log1p(adata.obs["total_counts"])
    adata.var["mito"] = adata.var_names.str.lower().str.startswith("mt-")
    adata.var["n_cells_by_counts"] = (x > 0).sum(axis=0)
    adata.var["total_counts"] = x.sum(axis=0)


def hest_xenium_metadata(sample_id: str, adata: ad.AnnData, slide_shape: tuple[int, int], pixel_size_um: float) -> dict:
    """A Xenium ``metadata/{id}.json`` as HEST builds it: ``experiment.xenium`` merged in, then the catalog row.

    Key order and values follow the real TENX95 file: the (bogus) embedded pixel size, every key of the real
    ``experiment.xenium``, HEST's computed keys with ``spot_diameter``/``inter_spot_dist`` NaN (the catalog row
    overrides them), then the catalog row (from the real ZEN61 template, made Xenium).

    The parameters are those of :func:`~hest_spatialdata.example.common.sample_fields` (``adata``: the pseudo-spots);
    returns the metadata, for :func:`~hest_spatialdata.example.common.write_metadata`.
    """
    fields = sample_fields(sample_id, adata, slide_shape, pixel_size_um)
    catalog = hest_metadata_template()
    for key in ("pixel_size_um_embedded", "pixel_size_um_estimated", "fullres_height", "fullres_width",
                "spots_under_tissue", "spot_estimate_dist", "spot_diameter", "inter_spot_dist", "adata_nb_col",
                "fullres_px_width", "fullres_px_height"):  # fmt: skip
        catalog.pop(key, None)
    catalog.update(
        dataset_title="Fresh Frozen Mouse Brain for Xenium Explorer Demo (hest-spatialdata synthetic H&E)",
        id=sample_id,
        image_filename=fields["image_filename"],
        organ="Brain",
        disease_state="Healthy",
        st_technology="Xenium",
        data_publication_date="2022-11-29",
        license="Creative Commons Attribution",
        download_page_link1="https://www.10xgenomics.com/datasets/fresh-frozen-mouse-brain-for-xenium-explorer-demo-1-standard",
        preservation_method="Fresh Frozen",
        nb_genes=fields["nb_genes"],
        magnification="40x" if pixel_size_um < 0.35 else "20x" if pixel_size_um < 0.75 else "10x",
        tissue="Brain",
        disease_comment=math.nan,
        subseries="Coronal subset CTX+HP",
    )
    return {
        "pixel_size_um_embedded": 1.0,
        **xenium_mouse_brain().experiment,
        "pixel_size_um_estimated": pixel_size_um,
        "spot_diameter": math.nan,
        "inter_spot_dist": math.nan,
        **{key: fields[key] for key in ("spots_under_tissue", "adata_nb_col", "fullres_px_width", "fullres_px_height")},
        **catalog,
    }


def write_xenium_sample(
    hest_dir: str | Path,
    sample_id: str = XENIUM_SAMPLE_ID,
    *,
    pixel_size_um: float = XENIUM_PIXEL_SIZE_UM,
    crop_um: tuple[float, float, float, float] | None = None,
    cell_id_type: CellIdType = "bytes",
    unassigned_fraction: float = 0.08,
    low_qv_fraction: float = 0.03,
    transcripts_geometry: bool = False,
    row_group_size: int = 1 << 20,
    geojson: bool = True,
    writer: SlideWriter = "auto",
    seed: int = 0,
    pseudo_spot_um: float = XENIUM_PSEUDO_SPOT_UM,
) -> Path:
    """Write a Xenium sample in HEST-1k layout from the real Xenium mouse-brain run.

    Writes ``wsis/{id}.tif``, ``metadata/{id}.json``, ``st/{id}.h5ad`` (``pseudo_spot_um`` pseudo-spots),
    ``transcripts/{id}_transcripts.parquet`` and ``xenium_seg/{id}_xenium_{cell,nucleus}_seg.{parquet,geojson.zip}``.
    Every count of the real cell x feature matrix (genes and control features) is one transcript with
    ``qv >= 20`` inside its cell, so 10x's counting rule gives back the real matrix; on top of these come
    ``low_qv_fraction`` low-quality copies and ``unassigned_fraction`` unassigned transcripts near cells.

    Parameters
    ----------
    hest_dir
        HEST root to write into.
    sample_id
        The sample id.
    pixel_size_um
        µm per level-0 pixel of the slide.
    crop_um
        ``(x0, y0, x1, y1)`` in Xenium µm: keep only the cells whose centroid is inside (the whole run, 36,602
        cells and ~9.9M transcripts, by default; a 600 µm square holds ~750 cells and ~200k transcripts).
    cell_id_type
        How cell ids are stored (HEST issue #109): ``"int"`` (XOA 1.x: int64, unassigned -1), ``"str"`` or
        ``"bytes"`` (``"aaaaaaab-1"``, unassigned ``"UNASSIGNED"``). Feature names are bytes unless ``"str"``.
    unassigned_fraction, low_qv_fraction
        Extra transcripts, relative to the counted ones.
    transcripts_geometry
        Add a WKB ``geometry`` column of points to the transcripts, as some HEST files carry.
    row_group_size
        Parquet row group size of the transcripts (pandas/pyarrow's default is 1Mi rows).
    geojson
        Also write the zipped GeoJSON shards of the boundaries.
    writer
        Slide writer, see :func:`write_slide`.
    seed
        Random seed.
    pseudo_spot_um
        Side of the pseudo-spots the st h5ad pools the transcripts in (HEST: 100 µm, about 58 µm for some samples).

    Returns
    -------
    The HEST root.
    """
    root = Path(hest_dir)
    rng = np.random.default_rng(seed)
    rows = xenium_cells_in(crop_um)
    if not len(rows):
        raise ValueError(f"no Xenium cell in the crop {crop_um}")
    real = xenium_mouse_brain().cells.iloc[rows]
    layout = _xenium_layout(real["x_centroid"].to_numpy(), real["y_centroid"].to_numpy(), pixel_size_um, 100.0)
    cells = xenium_sample_cells(rows, layout, cell_id_type, seed)
    slide = he_texture(layout.height, layout.width, seed=seed, tissue_mask=_cells_mask(layout, cells.centres))
    write_slide(PARTS[Part.WSI].path(root, sample_id), slide, pixel_size_um, writer=writer)
    write_xenium_seg(root, sample_id, cells, geojson=geojson)
    path = PARTS[Part.TRANSCRIPTS].path(root, sample_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = TranscriptWriter(
        path, cells, id_type=cell_id_type, geometry=transcripts_geometry, row_group_size=row_group_size
    )
    for chunk in np.array_split(np.arange(len(rows)), max(1, len(rows) // 4096)):
        write_cell_chunk(out, cells, chunk, layout, rng, unassigned_fraction=unassigned_fraction,
                         low_qv_fraction=low_qv_fraction)  # fmt: skip
    he_xy, codes = out.close()
    features = xenium_mouse_brain_features().names
    adata = hest_xenium_st_adata(he_xy, codes, features, slide, pixel_size_um, pseudo_spot_um)
    st = PARTS[Part.ST].path(root, sample_id)
    st.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(st)
    meta = hest_xenium_metadata(sample_id, adata, slide.shape[:2], pixel_size_um)
    write_metadata(PARTS[Part.METADATA].path(root, sample_id), meta)
    return root
