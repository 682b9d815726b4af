"""The Visium example: real Visium v1 spots pooling the real Xenium cells, on an H&E slide, in HEST-1k layout.

:func:`write_visium_sample` writes a whole sample (slide, st h5ad, metadata, tissue contours, CellViT nuclei,
patches); :func:`example_sample` writes the package's example ``EXAMPLE1`` once into a cache folder.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from hest_spatialdata.example.common import (
    VISIUM_SPOT_DIAMETER_UM,
    VisiumLayout,
    register_downscale_img,
    sample_fields,
    write_metadata,
)
from hest_spatialdata.example.segmentation import (
    tiled_nuclei,
    tissue_contours,
    tissue_mask,
    write_cellvit,
    write_patches,
    write_tissue_contours,
)
from hest_spatialdata.example.slide import SlideWriter, he_texture, write_slide
from hest_spatialdata.example.sources import hest_metadata_template, visium_whitelist, xenium_mouse_brain
from hest_spatialdata.source.layout import PARTS, Part

EXAMPLE_SAMPLE_ID = "EXAMPLE1"
#: The example slide's µm per pixel: small enough to build in seconds, a realistic 10x-20x scan.
EXAMPLE_PIXEL_SIZE_UM = 1.5
VISIUM_PITCH_UM = 100.0


def visium_layout(pixel_size_um: float, margin_um: float = 150.0) -> VisiumLayout:
    """A slide just large enough to hold the real tissue with a margin.

    Parameters
    ----------
    pixel_size_um
        µm per level-0 pixel.
    margin_um
        Margin around the outermost cell centroids, in µm.

    Returns
    -------
    Where the real tissue sits on the slide.
    """
    cells = xenium_mouse_brain().cells
    x0, y0 = cells["x_centroid"].min() - margin_um, cells["y_centroid"].min() - margin_um
    x1, y1 = cells["x_centroid"].max() + margin_um, cells["y_centroid"].max() + margin_um
    width, height = math.ceil((x1 - x0) / pixel_size_um), math.ceil((y1 - y0) / pixel_size_um)
    return VisiumLayout(pixel_size_um, (x0, y0), height, width)


def visium_spots(layout: VisiumLayout, min_cells: int = 1) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """Real Visium v1 spots over the tissue, with the real Xenium cells under each spot summed into its counts.

    Parameters
    ----------
    layout
        The slide layout.
    min_cells
        Keep only the spots with at least this many cells under them.

    Returns
    -------
    ``(spots, counts)``: barcode, array_row/col, centre (x, y px) per spot, and spots x genes counts.
    """
    from scipy.spatial import cKDTree

    xen = xenium_mouse_brain()
    spots = visium_whitelist()
    # Visium v1 geometry: columns are 50 µm apart (odd rows shifted), rows sqrt(3)/2 x 100 µm apart.
    x_um = layout.origin_um[0] + 100.0 + spots["array_col"] * VISIUM_PITCH_UM / 2
    y_um = layout.origin_um[1] + 100.0 + spots["array_row"] * VISIUM_PITCH_UM * math.sqrt(3) / 2
    tree = cKDTree(np.column_stack([xen.cells["x_centroid"], xen.cells["y_centroid"]]))
    members = tree.query_ball_point(np.column_stack([x_um, y_um]), r=VISIUM_SPOT_DIAMETER_UM / 2)
    keep = np.array([len(m) >= min_cells for m in members])
    rows = np.repeat(np.arange(keep.sum()), [len(m) for m, k in zip(members, keep, strict=True) if k])
    cols = np.concatenate([m for m, k in zip(members, keep, strict=True) if k]).astype(int)
    pooling = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(keep.sum(), len(xen.cells)))
    counts = (pooling @ xen.counts).tocsr()
    spots = spots[keep].reset_index(drop=True)
    centres = layout.to_px(x_um[keep].to_numpy(), y_um[keep].to_numpy())
    spots["pxl_col_in_fullres"], spots["pxl_row_in_fullres"] = centres[:, 0], centres[:, 1]
    return spots, counts


def hest_st_adata(
    spots: pd.DataFrame, counts: sp.spmatrix, genes: pd.Index, slide: np.ndarray, pixel_size_um: float,
    spot_size_um: float = VISIUM_SPOT_DIAMETER_UM,
) -> ad.AnnData:  # fmt: skip
    """The ``st/{id}.h5ad`` AnnData as HEST writes it for Visium.

    ``X`` is the CSR float32 of ``read_10x_h5``, ``obsm['spatial']`` the (x, y) level-0 px centres, QC columns
    as ``sc.pp.calculate_qc_metrics`` names them, and ``uns['spatial']['ST']`` rebuilt as in
    ``register_downscale_img`` (only a thumbnail with the longest edge 1000 px and two scale factors).

    Parameters
    ----------
    spots
        The spots of :func:`visium_spots`.
    counts
        Spots x genes counts.
    genes
        Gene names.
    slide
        The slide's level 0, (h, w, 3) uint8.
    pixel_size_um
        µm per level-0 pixel.
    spot_size_um
        Spot diameter in µm.

    Returns
    -------
    The AnnData.
    """
    x = sp.csr_matrix(counts, dtype=np.float32)
    obs = pd.DataFrame(
        {
            "in_tissue": np.ones(len(spots), dtype=np.int64),
            "pxl_col_in_fullres": spots["pxl_col_in_fullres"].round().astype(np.int64).to_numpy(),
            "pxl_row_in_fullres": spots["pxl_row_in_fullres"].round().astype(np.int64).to_numpy(),
            "array_col": spots["array_col"].to_numpy(),
            "array_row": spots["array_row"].to_numpy(),
        },
        index=pd.Index(spots["barcode"].to_numpy(), dtype=str),
    )
    totals = np.asarray(x.sum(axis=1)).ravel()
    obs["n_genes_by_counts"] = np.diff(x.indptr)
    obs["total_counts"] = totals
    obs["log1p_total_counts"] = np.log1p(totals)
    var = pd.DataFrame(index=pd.Index(genes, dtype=str))
    var["mito"] = var.index.str.lower().str.startswith("mt-")
    var["n_cells_by_counts"] = np.diff(x.tocsc().indptr)
    var["total_counts"] = np.asarray(x.sum(axis=0)).ravel()
    adata = ad.AnnData(X=x, obs=obs, var=var)
    adata.obsm["spatial"] = obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
    register_downscale_img(adata, slide, pixel_size_um, spot_size_um)
    return adata


def hest_metadata(sample_id: str, adata: ad.AnnData, slide_shape: tuple[int, int], pixel_size_um: float) -> dict:
    """The real ZEN61 metadata with this sample's id, sizes and pixel size (NaN kept).

    The parameters are those of :func:`~hest_spatialdata.example.common.sample_fields`; returns the metadata, for
    :func:`~hest_spatialdata.example.common.write_metadata`.
    """
    meta = hest_metadata_template()
    meta.update(
        sample_fields(sample_id, adata, slide_shape, pixel_size_um),
        dataset_title="hest-spatialdata example: real Xenium mouse brain pooled into Visium spots on a real H&E",
    )
    return meta


def write_visium_sample(
    hest_dir: str | Path,
    sample_id: str = EXAMPLE_SAMPLE_ID,
    *,
    pixel_size_um: float = EXAMPLE_PIXEL_SIZE_UM,
    writer: SlideWriter = "auto",
    seed: int = 0,
) -> Path:
    """Write a Visium sample in HEST-1k layout from real parts.

    Writes ``wsis/``, ``st/``, ``metadata/``, ``tissue_seg/{id}_contours.geojson`` (contours with holes),
    ``cellvit_seg/{id}_cellvit_seg.parquet`` and ``.geojson.zip`` (real nuclei tiled over the tissue) and
    ``patches/{id}.h5`` (224 px at 0.5 µm/px around the spots under tissue).

    Parameters
    ----------
    hest_dir
        HEST root to write into.
    sample_id
        The sample id (file names and metadata ``id``).
    pixel_size_um
        µm per level-0 pixel; the slide is about 5.5 x 3.7 mm, so 1.5 gives ~3,700 x 2,500 px.
    writer
        Slide writer, see :func:`write_slide`.
    seed
        Random seed of the texture.

    Returns
    -------
    The HEST root.
    """
    root = Path(hest_dir)
    layout = visium_layout(pixel_size_um)
    mask = tissue_mask(layout, fill_holes=False)  # glass in the holes of the contours too
    slide = he_texture(layout.height, layout.width, seed=seed, tissue_mask=mask)
    write_slide(PARTS[Part.WSI].path(root, sample_id), slide, pixel_size_um, writer=writer)
    spots, counts = visium_spots(layout)
    adata = hest_st_adata(spots, counts, xenium_mouse_brain().genes, slide, pixel_size_um)
    st = PARTS[Part.ST].path(root, sample_id)
    st.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(st)
    contours = tissue_contours(layout, mask)
    write_tissue_contours(PARTS[Part.TISSUE].path(root, sample_id), contours)
    nuclei = tiled_nuclei(layout, contours, seed=seed)
    write_cellvit(PARTS[Part.CELLVIT].path(root, sample_id).parent, sample_id, nuclei)
    write_patches(PARTS[Part.PATCHES].path(root, sample_id), slide, adata, pixel_size_um, contours)
    meta = hest_metadata(sample_id, adata, slide.shape[:2], pixel_size_um)
    write_metadata(PARTS[Part.METADATA].path(root, sample_id), meta)
    return root


def example_sample(hest_dir: str | Path | None = None, *, overwrite: bool = False) -> Path:
    """The example HEST sample ``EXAMPLE1``, written once into ``hest_dir`` (a user cache folder by default).

    Parameters
    ----------
    hest_dir
        HEST root to write into; default ``~/.cache/hest-spatialdata/example``.
    overwrite
        Rewrite the sample even if it is there.

    Returns
    -------
    The HEST root holding the sample; convert it with ``convert(root, out, ["EXAMPLE1"])``.
    """
    root = Path(hest_dir) if hest_dir is not None else Path.home() / ".cache" / "hest-spatialdata" / "example"
    marker = PARTS[Part.METADATA].path(root, EXAMPLE_SAMPLE_ID)
    if marker.is_file() and not overwrite:
        return root
    partial = root.with_name(f".{root.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_visium_sample(partial, EXAMPLE_SAMPLE_ID)
    root.mkdir(parents=True, exist_ok=True)
    # metadata/ last: its JSON marks the sample as complete
    for folder in sorted(partial.iterdir(), key=lambda p: p.name == PARTS[Part.METADATA].folder):
        target = root / folder.name
        target.mkdir(exist_ok=True)
        for item in folder.iterdir():
            item.replace(target / item.name)
    shutil.rmtree(partial, ignore_errors=True)
    return root
