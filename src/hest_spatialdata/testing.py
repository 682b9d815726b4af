"""HEST-format samples for tests, benchmarks and the demo, written exactly the way HEST-1k writes its files.

No real HEST slide or h5ad can be shipped, so the samples are assembled from real parts (see
``example_data/ATTRIBUTION.md``):

- the H&E texture is a real H&E tile (TIAToolbox's stain-normalisation target), mirrored and rotated at random;
- the tissue, the spots' expression and the cells are a real 10x Xenium mouse-brain run (36,602 cells, 248
  genes): cells are pooled into 55 µm Visium spots laid out on the real Visium v1 barcode whitelist;
- the metadata JSON is a real HEST ``metadata/ZEN61.json`` (Visium, mouse brain, with bare ``NaN`` tokens),
  with the sample-specific values replaced.

The writers mirror HEST's: ``wsis/{id}.tif`` is a libvips pyramidal tiled TIFF (256-px tiles, LZW, one page per
level, resolution tags in px/cm that are 10x off), ``st/{id}.h5ad`` has the ``uns['spatial']['ST']`` layout of
``register_downscale_img`` and ``metadata/{id}.json`` carries bare ``NaN``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from functools import cache
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from PIL import Image

EXAMPLE_SAMPLE_ID = "EXAMPLE1"
#: The example slide's µm per pixel: small enough to build in seconds, a realistic 10x-20x scan.
EXAMPLE_PIXEL_SIZE_UM = 1.5
VISIUM_PITCH_UM = 100.0
VISIUM_SPOT_DIAMETER_UM = 55.0
SlideWriter = Literal["auto", "pyvips", "tifffile"]
_DATA = package_files("hest_spatialdata") / "example_data"


def example_data_path(name: str) -> Path:
    """Path of a file shipped in ``hest_spatialdata/example_data``."""
    return Path(str(_DATA / name))


# --------------------------------------------------------------------------------------------- real parts


@dataclass(frozen=True)
class XeniumCells:
    """The real Xenium mouse-brain run: cell centroids and areas (µm) and the cell x gene counts."""

    cells: pd.DataFrame  # cell_id, x_centroid, y_centroid, cell_area, nucleus_area (µm, µm²)
    counts: sp.csr_matrix  # cells x genes, Gene Expression features only
    genes: pd.Index
    experiment: dict[str, Any]


@cache
def xenium_mouse_brain() -> XeniumCells:
    """Load the real Xenium mouse-brain cells shipped with the package (10x, CC BY 4.0)."""
    cells = pd.read_csv(example_data_path("xenium_mouse_brain_cells.csv.gz"))
    with h5py.File(example_data_path("xenium_mouse_brain_cell_feature_matrix.h5"), "r") as f:
        m = f["matrix"]
        shape = tuple(m["shape"][:])  # (features, cells)
        matrix = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=shape)
        names = m["features/name"][:].astype(str)
        kinds = m["features/feature_type"][:].astype(str)
        barcodes = m["barcodes"][:].astype(str)
    if not (barcodes == cells["cell_id"].astype(str).to_numpy()).all():
        raise ValueError("cells.csv.gz and cell_feature_matrix.h5 disagree on the cell order")
    genes = kinds == "Gene Expression"
    counts = matrix.T.tocsr()[:, np.flatnonzero(genes)]
    experiment = json.loads(example_data_path("xenium_mouse_brain.experiment.xenium").read_text())
    return XeniumCells(cells=cells, counts=counts, genes=pd.Index(names[genes]), experiment=experiment)


@cache
def he_tile() -> np.ndarray:
    """A real 1000 x 1000 RGB H&E tile."""
    return np.asarray(Image.open(example_data_path("he_tile.jpg")).convert("RGB"))


def visium_whitelist() -> pd.DataFrame:
    """The 4,992 real Visium v1 barcodes with their array column and row (0-based)."""
    table = pd.read_csv(example_data_path("visium-v1_coordinates.txt"), sep="\t", header=None, names=["b", "c", "r"])
    return pd.DataFrame(
        {"barcode": table["b"] + "-1", "array_col": table["c"] - 1, "array_row": table["r"] - 1}
    )


def hest_metadata_template() -> dict[str, Any]:
    """A real HEST ``metadata/{id}.json`` (ZEN61, Visium mouse brain), NaN kept as float NaN."""
    return json.loads(example_data_path("ZEN61_metadata.json").read_text())


# --------------------------------------------------------------------------------------------- slides


def he_texture(height: int, width: int, *, seed: int = 0, tissue_mask: np.ndarray | None = None) -> np.ndarray:
    """An RGB uint8 H&E-looking slide: the real tile mirrored and rotated at random, with scanner-like noise.

    Parameters
    ----------
    height, width
        Size in pixels.
    seed
        Random seed.
    tissue_mask
        Optional boolean mask (any resolution, resized to the slide): outside it the slide is glass background.
    """
    rng = np.random.default_rng(seed)
    tile = he_tile()
    side = tile.shape[0]
    image = np.empty((height, width, 3), np.uint8)
    for y in range(0, height, side):
        for x in range(0, width, side):
            t = np.rot90(tile, k=int(rng.integers(4)))
            if rng.random() < 0.5:
                t = t[::-1]
            h, w = min(side, height - y), min(side, width - x)
            image[y : y + h, x : x + w] = t[:h, :w]
    if tissue_mask is not None:
        mask = np.asarray(Image.fromarray(tissue_mask.astype(np.uint8) * 255).resize((width, height), Image.BILINEAR))
        glass = np.array([242, 240, 244], np.uint8)
        image[mask < 128] = glass
    noise = rng.normal(0, 1.5, size=image.shape).round().astype(np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_slide(path: str | Path, image: Any, pixel_size_um: float, *, writer: SlideWriter = "auto") -> Path:
    """Write an RGB slide the way HEST's ``tiff_save`` does.

    libvips ``tiffsave(pyramid=True, tile=True, 256 x 256, compression="lzw", bigtiff when > 4 GB)`` with the
    resolution in px/cm computed as ``1 / (pixel_size * 1e-4)`` while libvips expects px/mm: the tags read 10x
    too small a pixel size, as on the hub. Without pyvips, tifffile writes the same layout (one page per level,
    each a 2x2 mean of the one above, sizes rounded down as libvips 8.18 does).

    Parameters
    ----------
    path
        Output ``.tif``.
    image
        An (h, w, 3) uint8 array, or a ``pyvips.Image`` (streamed, for slides larger than memory).
    pixel_size_um
        True µm per pixel (written 10x off, as HEST does).
    writer
        ``"pyvips"`` (HEST's writer), ``"tifffile"``, or ``"auto"`` (pyvips when installed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if writer == "auto":
        writer = "pyvips" if _has_pyvips() else "tifffile"
    xres = 1 / (pixel_size_um * 1e-4)  # HEST's value: px per cm, handed to libvips as px per mm
    if writer == "pyvips":
        import pyvips

        vips = image if isinstance(image, pyvips.Image) else pyvips.Image.new_from_array(np.asarray(image))
        bigtiff = vips.width * vips.height * vips.bands > 4 * 1024**3
        vips.tiffsave(
            str(path), pyramid=True, tile=True, tile_width=256, tile_height=256, compression="lzw",
            bigtiff=bigtiff, resunit="cm", xres=xres, yres=xres,
        )  # fmt: skip
        return path
    _write_slide_tifffile(path, np.asarray(image), xres)
    return path


def _write_slide_tifffile(path: Path, image: np.ndarray, xres: float) -> None:
    import tifffile

    # libvips stores xres in px/mm and converts to the unit asked: the tag holds xres * 10 px/cm.
    resolution = (xres * 10, xres * 10)
    with tifffile.TiffWriter(path, bigtiff=image.nbytes > 4 * 1024**3) as tif:
        level, subfiletype = image, 0
        while True:
            tif.write(
                level, tile=(256, 256), compression="lzw", photometric="rgb", subfiletype=subfiletype,
                resolution=resolution, resolutionunit="CENTIMETER", software="libvips",
            )  # fmt: skip
            if max(level.shape[:2]) <= 256:
                break
            level, subfiletype = _halve(level), 1


def _halve(level: np.ndarray) -> np.ndarray:
    h, w = level.shape[0] // 2, level.shape[1] // 2
    blocks = level[: 2 * h, : 2 * w].reshape(h, 2, w, 2, 3).astype(np.uint16)
    return ((blocks.sum(axis=(1, 3)) + 2) // 4).astype(np.uint8)


def _has_pyvips() -> bool:
    try:
        import pyvips  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


# --------------------------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class VisiumLayout:
    """Where the real Xenium tissue sits on the synthetic Visium slide."""

    pixel_size_um: float
    origin_um: tuple[float, float]  # µm of the Xenium frame at slide pixel (0, 0)
    height: int
    width: int

    def to_px(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        """Xenium µm → slide level-0 px, as (n, 2) (x, y)."""
        return np.column_stack(
            [(x_um - self.origin_um[0]) / self.pixel_size_um, (y_um - self.origin_um[1]) / self.pixel_size_um]
        )


def visium_layout(pixel_size_um: float, margin_um: float = 150.0) -> VisiumLayout:
    """A slide just large enough to hold the real tissue with a margin."""
    cells = xenium_mouse_brain().cells
    x0, y0 = cells["x_centroid"].min() - margin_um, cells["y_centroid"].min() - margin_um
    x1, y1 = cells["x_centroid"].max() + margin_um, cells["y_centroid"].max() + margin_um
    width, height = math.ceil((x1 - x0) / pixel_size_um), math.ceil((y1 - y0) / pixel_size_um)
    return VisiumLayout(pixel_size_um, (x0, y0), height, width)


def tissue_mask(layout: VisiumLayout, bin_um: float = 50.0) -> np.ndarray:
    """Boolean mask (one pixel per ``bin_um``) of where the real tissue is: bins holding cells, closed."""
    from scipy import ndimage

    cells = xenium_mouse_brain().cells
    xy = layout.to_px(cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy()) * layout.pixel_size_um
    shape = (math.ceil(layout.height * layout.pixel_size_um / bin_um), math.ceil(layout.width * layout.pixel_size_um / bin_um))
    mask = np.zeros(shape, bool)
    mask[(xy[:, 1] // bin_um).astype(int), (xy[:, 0] // bin_um).astype(int)] = True
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_fill_holes(mask)


def visium_spots(layout: VisiumLayout, min_cells: int = 1) -> tuple[pd.DataFrame, sp.csr_matrix]:
    """Real Visium v1 spots over the tissue, with the real Xenium cells under each spot summed into its counts.

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
    h, w = slide.shape[:2]
    scale = 1000 / max(h, w)
    thumb = np.asarray(Image.fromarray(slide).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
    adata.uns["spatial"] = {
        "ST": {
            "images": {"downscaled_fullres": thumb},
            "scalefactors": {
                "tissue_downscaled_fullres_scalef": scale,
                "spot_diameter_fullres": spot_size_um / pixel_size_um,
            },
        }
    }
    return adata


def hest_metadata(sample_id: str, adata: ad.AnnData, slide_shape: tuple[int, int], pixel_size_um: float) -> dict:
    """The real ZEN61 metadata with this sample's id, sizes and pixel size (NaN kept)."""
    meta = hest_metadata_template()
    h, w = slide_shape
    meta.update(
        id=sample_id,
        image_filename=f"{sample_id}.tif",
        pixel_size_um_estimated=pixel_size_um,
        fullres_height=h,
        fullres_width=w,
        fullres_px_height=h,
        fullres_px_width=w,
        spots_under_tissue=adata.n_obs,
        adata_nb_col=adata.n_vars,
        nb_genes=adata.n_vars,
        dataset_title="hest-spatialdata example: real Xenium mouse brain pooled into Visium spots on a real H&E",
    )
    return meta


def write_metadata(path: str | Path, meta: dict[str, Any]) -> Path:
    """Write a metadata JSON as HEST does (``json.dump`` leaves NaN as bare ``NaN`` tokens)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, allow_nan=True), encoding="utf-8")
    return path


def write_visium_sample(
    hest_dir: str | Path,
    sample_id: str = EXAMPLE_SAMPLE_ID,
    *,
    pixel_size_um: float = EXAMPLE_PIXEL_SIZE_UM,
    writer: SlideWriter = "auto",
    seed: int = 0,
) -> Path:
    """Write a Visium sample in HEST-1k layout (``wsis/``, ``st/``, ``metadata/``) from real parts.

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
    slide = he_texture(layout.height, layout.width, seed=seed, tissue_mask=tissue_mask(layout))
    write_slide(root / "wsis" / f"{sample_id}.tif", slide, pixel_size_um, writer=writer)
    spots, counts = visium_spots(layout)
    adata = hest_st_adata(spots, counts, xenium_mouse_brain().genes, slide, pixel_size_um)
    (root / "st").mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(root / "st" / f"{sample_id}.h5ad")
    write_metadata(root / "metadata" / f"{sample_id}.json", hest_metadata(sample_id, adata, slide.shape[:2], pixel_size_um))
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
    marker = root / "metadata" / f"{EXAMPLE_SAMPLE_ID}.json"
    if marker.is_file() and not overwrite:
        return root
    partial = root.with_name(f".{root.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_visium_sample(partial, EXAMPLE_SAMPLE_ID)
    root.mkdir(parents=True, exist_ok=True)
    # metadata/ last: its JSON marks the sample as complete
    for folder in sorted(partial.iterdir(), key=lambda p: p.name == "metadata"):
        target = root / folder.name
        target.mkdir(exist_ok=True)
        for item in folder.iterdir():
            item.replace(target / item.name)
    shutil.rmtree(partial, ignore_errors=True)
    return root

