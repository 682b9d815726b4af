"""10x outputs built from the example's real parts, to import: a full-resolution H&E, Space Ranger folders.

- :func:`write_fullres_he`: a full-resolution H&E TIFF of any size, streamed tile by tile (never the whole slide in
  memory) from the real H&E tile (the example slides' texture), glass outside a tissue mask; pyramidal (HEST's
  layout: one page per level) or flat.
- :func:`write_10x_h5`: a counts matrix in Cell Ranger / Space Ranger's HDF5 layout (``matrix/`` CSC, features).
- :func:`write_visium_run`: a Space Ranger (Visium v1) ``outs/`` folder of the real Visium v1 spots pooling the
  real Xenium mouse-brain cells (the example's spots), with the H&E it was "run" on.
- :func:`write_visium_hd_run`: a Space Ranger HD ``outs/`` folder: the same real cells binned into 2, 8 and 16 µm
  squares (``binned_outputs/square_XXXum/``), as spatialdata-io's ``visium_hd`` reads it.

What is real and what is built: docs/import.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image

from hest_spatialdata.example.sources import he_tile, visium_whitelist, xenium_mouse_brain

GLASS_RGB = (242, 240, 244)
TILE_PX = 256
#: Space Ranger's image scale factors: the hires PNG's longer side is 2000 px (600 for the lowres).
HIRES_PX, LOWRES_PX = 2000, 600
VISIUM_CHEMISTRY = "Spatial 3' v1"
VISIUM_HD_CHEMISTRY = "Visium HD v1"


def write_fullres_he(
    path: str | Path,
    height: int,
    width: int,
    *,
    tissue_mask: np.ndarray | None = None,
    seed: int = 0,
    pyramid: bool = True,
    compression: str = "zlib",
) -> Path:
    """Write an RGB uint8 H&E TIFF of ``height x width`` px, tile by tile, from the real H&E tile.

    Parameters
    ----------
    path
        Output ``.tif``.
    height, width
        Level-0 size in px.
    tissue_mask
        A boolean mask (any size, stretched over the slide): glass outside it.
    seed
        Random seed of the texture's rotations and flips (one per 1000-px block).
    pyramid
        Write HEST's pyramid (each level half the one above, rounded down, down to 256 px) or a flat TIFF.
    compression
        tifffile compression of the 256-px tiles.
    """
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    texture = _Texture(height, width, tissue_mask, seed)
    shapes = [(height, width)]
    while pyramid and max(shapes[-1]) > TILE_PX:
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
    with tifffile.TiffWriter(path, bigtiff=height * width * 3 > 2**31) as tif:
        for k, (h, w) in enumerate(shapes):
            tif.write(
                texture.tiles(k, h, w), shape=(h, w, 3), dtype=np.uint8, tile=(TILE_PX, TILE_PX),
                compression=compression, photometric="rgb", subfiletype=1 if k else 0,
            )  # fmt: skip
    return path


class _Texture:
    """The real tile, rotated / flipped per 1000-px block, with glass outside the mask; any level, any tile."""

    def __init__(self, height: int, width: int, mask: np.ndarray | None, seed: int) -> None:
        tile = he_tile()
        self.side = tile.shape[0]
        self.variants = np.stack([np.rot90(t, k) for t in (tile, tile[::-1]) for k in range(4)])
        rng = np.random.default_rng(seed)
        self.choice = rng.integers(len(self.variants), size=(-(-height // self.side), -(-width // self.side)))
        self.height, self.width = height, width
        self.mask = None if mask is None else np.asarray(mask, bool)

    def tiles(self, level: int, h: int, w: int) -> Iterator[np.ndarray]:
        """The level's 256-px tiles in row-major order (edge tiles padded), at ``2**level`` times coarser."""
        for y in range(0, h, TILE_PX):
            for x in range(0, w, TILE_PX):
                yield self.window(level, y, x, TILE_PX, TILE_PX)

    def window(self, level: int, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        """Pixels ``[y0:y0+h, x0:x0+w]`` of a level: level-0 pixels sampled every ``2**level``."""
        step = 2**level
        ys = np.minimum((y0 + np.arange(h)) * step, self.height - 1)
        xs = np.minimum((x0 + np.arange(w)) * step, self.width - 1)
        inside = None
        if self.mask is not None:
            my, mx = ys * self.mask.shape[0] // self.height, xs * self.mask.shape[1] // self.width
            inside = self.mask[my[:, None], mx[None, :]]
            if not inside.any():  # most of a slide is glass: no texture to sample
                return np.broadcast_to(np.asarray(GLASS_RGB, np.uint8), (h, w, 3)).copy()
        by, bx = ys // self.side, xs // self.side
        if by[0] == by[-1] and bx[0] == bx[-1]:  # within one block of the texture: a strided slice
            variant = self.variants[self.choice[by[0], bx[0]]]
            out = variant[(ys % self.side)[:, None], (xs % self.side)[None, :]]
        else:
            block = self.choice[by[:, None], bx[None, :]]
            out = self.variants[block, (ys % self.side)[:, None], (xs % self.side)[None, :]]
        if inside is not None:
            out[~inside] = GLASS_RGB
        return out


def write_10x_h5(
    path: str | Path,
    counts: sp.spmatrix,
    barcodes: list[str] | np.ndarray,
    genes: list[str] | pd.Index,
    *,
    gene_ids: list[str] | None = None,
    chemistry: str = VISIUM_CHEMISTRY,
    library_id: str = "example",
    software: str = "spaceranger-3.1.2",
) -> Path:
    """Write ``counts`` (barcodes x genes) in the Space Ranger / Cell Ranger HDF5 layout (``matrix/``, version 2)."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix = sp.csc_matrix(sp.csr_matrix(counts).T)  # features x barcodes, CSC: one column per barcode
    gene_ids = list(gene_ids) if gene_ids is not None else [f"GENE{i:05d}" for i in range(len(genes))]
    with h5py.File(path, "w") as f:
        f.attrs.update(
            chemistry_description=np.bytes_(chemistry), filetype=np.bytes_("matrix"),
            library_ids=np.array([library_id.encode()]), original_gem_groups=np.array([1], np.int32),
            software_version=software, version=np.array([2], np.int32),
        )  # fmt: skip
        group = f.create_group("matrix")
        group["barcodes"] = np.array([b.encode() for b in barcodes])
        group["data"] = matrix.data.astype(np.int32)
        group["indices"] = matrix.indices.astype(np.int64)
        group["indptr"] = matrix.indptr.astype(np.int64)
        group["shape"] = np.array(matrix.shape, np.int32)
        features = group.create_group("features")
        features["_all_tag_keys"] = np.array([b"genome"])
        features["feature_type"] = np.array([b"Gene Expression"] * len(genes))
        features["genome"] = np.array([b"mm10"] * len(genes))
        features["id"] = np.array([g.encode() for g in gene_ids])
        features["name"] = np.array([str(g).encode() for g in genes])
    return path


def scalefactors(height: int, width: int, spot_diameter_fullres: float, **extra: float) -> dict[str, float]:
    """Space Ranger's scale factors for a ``height x width`` image: hires / lowres longer side 2000 / 600 px."""
    longer = max(height, width)
    return {
        "spot_diameter_fullres": spot_diameter_fullres,
        "tissue_hires_scalef": HIRES_PX / longer,
        "fiducial_diameter_fullres": spot_diameter_fullres * 1.6153846,
        "tissue_lowres_scalef": LOWRES_PX / longer,
        **extra,
    }


def write_spatial_images(spatial: Path, he: Path, factors: dict[str, float]) -> None:
    """``tissue_hires_image.png`` and ``tissue_lowres_image.png`` from a coarse level of the H&E TIFF."""
    import tifffile

    with tifffile.TiffFile(he) as tif:
        levels = tif.series[0].levels
        height, width = levels[0].shape[:2]
        for name, key in (
            ("tissue_hires_image.png", "tissue_hires_scalef"),
            ("tissue_lowres_image.png", "tissue_lowres_scalef"),
        ):
            size = (round(width * factors[key]), round(height * factors[key]))
            level = next((lv for lv in reversed(levels) if lv.shape[1] >= size[0]), levels[0])
            Image.fromarray(level.asarray()).resize(size, Image.LANCZOS).save(spatial / name)


def _mask_from_cells(xy_px: np.ndarray, height: int, width: int, bin_px: float) -> np.ndarray:
    """Tissue where cells are: a coarse occupancy mask, closed so that the tissue has no pin holes."""
    from scipy import ndimage

    shape = (math.ceil(height / bin_px), math.ceil(width / bin_px))
    mask = np.zeros(shape, bool)
    mask[(xy_px[:, 1] // bin_px).astype(int), (xy_px[:, 0] // bin_px).astype(int)] = True
    return ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))


def _cells_px(pixel_size_um: float, margin_um: float) -> tuple[np.ndarray, int, int, Any]:
    """The real Xenium cells' centroids on a slide of ``pixel_size_um`` with a margin: (xy px, height, width)."""
    xen = xenium_mouse_brain()
    x_um, y_um = xen.cells["x_centroid"].to_numpy(), xen.cells["y_centroid"].to_numpy()
    x0, y0 = x_um.min() - margin_um, y_um.min() - margin_um
    width = math.ceil((x_um.max() + margin_um - x0) / pixel_size_um)
    height = math.ceil((y_um.max() + margin_um - y0) / pixel_size_um)
    return np.column_stack([(x_um - x0) / pixel_size_um, (y_um - y0) / pixel_size_um]), height, width, xen


def write_visium_run(
    folder: str | Path, *, pixel_size_um: float = 1.0, margin_um: float = 300.0, pyramid: bool = True
) -> tuple[Path, Path]:
    """A Space Ranger (Visium v1) run: ``folder/outs/`` and the full-resolution H&E ``folder/he.tif``.

    The spots are the real Visium v1 barcodes and array positions (100 µm pitch) over the real Xenium mouse-brain
    cells, each spot's counts the sum of the cells whose centroid is within its 55 µm; the tissue positions list all
    4,992 spots (``in_tissue`` where a cell is under them); the counts h5 holds the spots under tissue.

    Returns
    -------
    ``(outs folder, H&E path)``.
    """
    from scipy.spatial import cKDTree

    folder = Path(folder)
    outs, spatial = folder / "outs", folder / "outs" / "spatial"
    spatial.mkdir(parents=True, exist_ok=True)
    xy, height, width, xen = _cells_px(pixel_size_um, margin_um)
    spots = visium_whitelist()
    pitch_px = 100.0 / pixel_size_um
    spots["pxl_col_in_fullres"] = margin_um / 2 / pixel_size_um + spots["array_col"] * pitch_px / 2
    spots["pxl_row_in_fullres"] = margin_um / 2 / pixel_size_um + spots["array_row"] * pitch_px * math.sqrt(3) / 2
    on_slide = (spots["pxl_col_in_fullres"] < width) & (spots["pxl_row_in_fullres"] < height)
    spots = spots[on_slide].reset_index(drop=True)
    members = cKDTree(xy).query_ball_point(
        spots[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(), r=27.5 / pixel_size_um
    )
    spots["in_tissue"] = [int(len(m) > 0) for m in members]
    under = np.flatnonzero(spots["in_tissue"].to_numpy())
    rows = np.repeat(np.arange(len(under)), [len(members[i]) for i in under])
    pooling = sp.csr_matrix(
        (np.ones(len(rows)), (rows, np.concatenate([members[i] for i in under]))), shape=(len(under), len(xy))
    )
    counts = (pooling @ xen.counts).tocsr()
    write_10x_h5(outs / "filtered_feature_bc_matrix.h5", counts, spots["barcode"].iloc[under].tolist(), xen.genes)
    columns = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
    positions = spots[columns].copy()
    positions[["pxl_row_in_fullres", "pxl_col_in_fullres"]] = (
        positions[["pxl_row_in_fullres", "pxl_col_in_fullres"]].round().astype(int)
    )
    positions.to_csv(spatial / "tissue_positions.csv", index=False)
    he = write_fullres_he(
        folder / "he.tif",
        height,
        width,
        tissue_mask=_mask_from_cells(xy, height, width, 50 / pixel_size_um),
        pyramid=pyramid,
    )
    factors = scalefactors(height, width, 65.0 / pixel_size_um)
    (spatial / "scalefactors_json.json").write_text(json.dumps(factors))
    write_spatial_images(spatial, he, factors)
    return outs, he


def write_visium_hd_run(
    folder: str | Path,
    *,
    pixel_size_um: float = 0.5,
    margin_um: float = 100.0,
    bin_sizes_um: tuple[int, ...] = (2, 8, 16),
) -> tuple[Path, Path]:
    """A Space Ranger HD run: ``folder/outs/binned_outputs/square_XXXum/`` and the H&E ``folder/he.tif``.

    Each real Xenium cell's counts go to the bin holding its centroid; bins without a cell are left out (as a
    filtered matrix under tissue). Bin barcodes are Space Ranger's ``s_016um_00012_00034-1``; positions are the bin
    centres in level-0 px of the H&E; ``feature_slice.h5`` carries the layout metadata spatialdata-io reads.

    Returns
    -------
    ``(outs folder, H&E path)``.
    """
    import h5py

    folder = Path(folder)
    outs = folder / "outs"
    xy, height, width, xen = _cells_px(pixel_size_um, margin_um)
    for size in bin_sizes_um:
        bin_px = size / pixel_size_um
        col, row = (xy[:, 0] // bin_px).astype(int), (xy[:, 1] // bin_px).astype(int)
        keys, codes = np.unique(row * 100_000 + col, return_inverse=True)
        pooling = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(keys), len(xy)))
        counts = (pooling @ xen.counts).tocsr()
        rows, cols = keys // 100_000, keys % 100_000
        barcodes = [f"s_{size:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)]
        bin_folder = outs / "binned_outputs" / f"square_{size:03d}um"
        write_10x_h5(
            bin_folder / "filtered_feature_bc_matrix.h5", counts, barcodes, xen.genes, chemistry=VISIUM_HD_CHEMISTRY
        )
        spatial = bin_folder / "spatial"
        spatial.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({
            "barcode": barcodes, "in_tissue": np.ones(len(keys), np.int32), "array_row": rows, "array_col": cols,
            "pxl_row_in_fullres": (rows + 0.5) * bin_px, "pxl_col_in_fullres": (cols + 0.5) * bin_px,
        }).to_parquet(spatial / "tissue_positions.parquet", index=False)  # fmt: skip
        factors = scalefactors(height, width, bin_px, bin_size_um=float(size), microns_per_pixel=pixel_size_um)
        (spatial / "scalefactors_json.json").write_text(json.dumps(factors))
    layout = {"file_format": "1.0", "transform": np.eye(3).ravel().tolist()}
    with h5py.File(outs / "feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps({"hd_layout_json": json.dumps(layout)})
    he = write_fullres_he(
        folder / "he.tif", height, width, tissue_mask=_mask_from_cells(xy, height, width, 50 / pixel_size_um)
    )
    spatial = outs / "spatial"
    spatial.mkdir(parents=True, exist_ok=True)
    factors = scalefactors(height, width, 16 / pixel_size_um)
    (spatial / "scalefactors_json.json").write_text(json.dumps(factors))
    write_spatial_images(spatial, he, factors)
    return outs, he
