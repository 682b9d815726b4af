"""HEST-format samples for tests, benchmarks and the demo, written exactly the way HEST-1k writes its files.

No real HEST slide or h5ad can be shipped, so the samples are assembled from real parts (see
``example_data/ATTRIBUTION.md``):

- the H&E texture is a real H&E tile (TIAToolbox's stain-normalisation target), mirrored and rotated at random;
- the tissue, the spots' expression and the cells are a real 10x Xenium mouse-brain run (36,602 cells, 248
  genes): cells are pooled into 55 µm Visium spots laid out on the real Visium v1 barcode whitelist;
- the metadata JSON is a real HEST ``metadata/ZEN61.json`` (Visium, mouse brain, with bare ``NaN`` tokens),
  with the sample-specific values replaced;
- the nuclei are real deep-learning segmentations (cellseg_gsontools, two 2000 px tiles) in HEST's CellViT layout,
  tiled over the tissue; the tissue contours and the patches are derived from the tissue and the slide the way
  HEST derives them.

The writers mirror HEST's: ``wsis/{id}.tif`` is a libvips pyramidal tiled TIFF (256-px tiles, LZW, one page per
level, resolution tags in px/cm that are 10x off), ``st/{id}.h5ad`` has the ``uns['spatial']['ST']`` layout of
``register_downscale_img`` and ``metadata/{id}.json`` carries bare ``NaN``.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import warnings
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import geopandas as gpd
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import shapely
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
    return pd.DataFrame({"barcode": table["b"] + "-1", "array_col": table["c"] - 1, "array_row": table["r"] - 1})


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


def tissue_mask(layout: VisiumLayout, bin_um: float = 50.0, *, fill_holes: bool = True) -> np.ndarray:
    """Boolean mask (one pixel per ``bin_um``) of where the real tissue is: bins holding cells, closed.

    With ``fill_holes=False`` the cell-free areas enclosed by tissue stay out of the mask (holes of the contours).
    """
    from scipy import ndimage

    cells = xenium_mouse_brain().cells
    xy = layout.to_px(cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy()) * layout.pixel_size_um
    shape = (
        math.ceil(layout.height * layout.pixel_size_um / bin_um),
        math.ceil(layout.width * layout.pixel_size_um / bin_um),
    )
    mask = np.zeros(shape, bool)
    mask[(xy[:, 1] // bin_um).astype(int), (xy[:, 0] // bin_um).astype(int)] = True
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_fill_holes(mask) if fill_holes else mask


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
    _register_downscale_img(adata, slide, pixel_size_um, spot_size_um)
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


# --------------------------------------------------------------------------------------------- nuclei, tissue, patches

#: The real nuclei tiles (``example_data/ATTRIBUTION.md``): HEST-layout CellViT GeoJSON, 2000 x 2000 px each.
NUCLEI_TILE_FILES = ("gland_cells_hest_cellvit_seg.geojson.gz", "ts_iface_cells_hest_cellvit_seg.geojson.gz")
NUCLEI_TILE_SIDE_PX = 2000
#: µm per px assumed for the nuclei tiles (their source does not state it): nuclei are then ~8 µm across and the
#: example tissue holds ~40k of them, close to the 36,602 real Xenium cells of the same tissue.
NUCLEI_TILE_PIXEL_SIZE_UM = 0.35
#: HEST's ``dump_patches`` defaults.
PATCH_SIZE_PX = 224
PATCH_PIXEL_SIZE_UM = 0.5
PATCH_TISSUE_THRESHOLD = 0.15
#: RGB of the CellViT classes in the zipped GeoJSON (HEST derives them from a colormap; any colour is valid).
CELLVIT_COLORS = {
    "Neoplastic": [255, 0, 0], "Inflammatory": [34, 221, 77], "Connective": [35, 92, 236], "Dead": [254, 255, 0],
    "Epithelial": [255, 159, 68],
}  # fmt: skip


@cache
def nuclei_tiles() -> tuple[gpd.GeoDataFrame, ...]:
    """The real nuclei tiles: polygons in tile px (0..2000) with their CellViT ``class``."""
    tiles = []
    for name in NUCLEI_TILE_FILES:
        with gzip.open(example_data_path(name), "rt", encoding="utf-8") as file:
            features = json.load(file)
        polygons = [shapely.Polygon(p[0]) for f in features for p in f["geometry"]["coordinates"]]
        classes = [f["properties"]["classification"]["name"] for f in features for _ in f["geometry"]["coordinates"]]
        tiles.append(gpd.GeoDataFrame({"class": classes}, geometry=polygons))
    return tuple(tiles)


def tissue_contours(layout: VisiumLayout, mask: np.ndarray | None = None, bin_um: float = 50.0) -> gpd.GeoDataFrame:
    """Tissue contours (level-0 px, holes as interior rings) of a tissue mask, one polygon per piece of tissue.

    Parameters
    ----------
    layout
        The slide layout.
    mask
        A :func:`tissue_mask` (one pixel per ``bin_um``); by default the unfilled mask, which keeps the holes.
    bin_um
        Side of one mask pixel in µm.

    Returns
    -------
    Columns ``tissue_id`` (str, as in the released files) and ``geometry``, largest piece first.
    """
    mask = tissue_mask(layout, bin_um, fill_holes=False) if mask is None else mask
    rows, cols = np.nonzero(mask)
    side = bin_um / layout.pixel_size_um
    cells = shapely.box(cols * side, rows * side, (cols + 1) * side, (rows + 1) * side)
    tissue = shapely.intersection(shapely.union_all(cells), shapely.box(0, 0, layout.width, layout.height))
    pieces = shapely.get_parts(shapely.simplify(tissue, 0))  # simplify(0) drops the vertices left between cells
    pieces = pieces[np.argsort(-shapely.area(pieces), kind="stable")]
    return gpd.GeoDataFrame({"tissue_id": [str(i) for i in range(len(pieces))]}, geometry=pieces)


def write_tissue_contours(path: str | Path, contours: gpd.GeoDataFrame) -> Path:
    """Write ``tissue_seg/{id}_contours.geojson`` as HEST does: ``GeoDataFrame.to_file(driver="GeoJSON")``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # HEST's contours have no CRS either: pixels, not a map projection
        warnings.filterwarnings("ignore", message=".*crs.*", category=UserWarning)
        contours.to_file(path, driver="GeoJSON")
    return path


def tiled_nuclei(layout: VisiumLayout, contours: gpd.GeoDataFrame, *, seed: int = 0) -> gpd.GeoDataFrame:
    """Real nuclei covering the tissue: translated copies of the real tiles, rescaled to the slide's pixel size.

    Copies of the tiles (chosen at random) are laid side by side over the slide; the nuclei whose centroid falls
    inside the tissue contours are kept. Coordinates are rounded to 0.01 px, so the GeoParquet and the GeoJSON
    written from them hold the same numbers.

    Returns
    -------
    HEST's CellViT layout: ``geometry`` (level-0 px), ``class``, ``cell_id`` = ``arange``, rows grouped by class
    in sorted order (the order of HEST's zipped GeoJSON, which its parquet is read from).
    """
    rng = np.random.default_rng(seed)
    scale = NUCLEI_TILE_PIXEL_SIZE_UM / layout.pixel_size_um
    step = NUCLEI_TILE_SIDE_PX * scale
    gx, gy = np.meshgrid(np.arange(0, layout.width, step), np.arange(0, layout.height, step))
    origins = np.column_stack([gx.ravel(), gy.ravel()])
    choice = rng.integers(len(NUCLEI_TILE_FILES), size=len(origins))
    parts = [translated_copies(tile, origins[choice == k], scale) for k, tile in enumerate(nuclei_tiles())]
    nuclei = pd.concat(parts, ignore_index=True)
    inside = shapely.contains_xy(contours.union_all(), *shapely.get_coordinates(nuclei.centroid).T)
    nuclei = nuclei[inside].sort_values("class", kind="stable").reset_index(drop=True)
    frame = gpd.GeoDataFrame(geometry=nuclei.geometry.to_numpy())
    frame["class"] = nuclei["class"].astype(str).to_numpy()
    frame["cell_id"] = np.arange(len(frame))
    return frame


def translated_copies(tile: gpd.GeoDataFrame, origins: np.ndarray, scale: float) -> gpd.GeoDataFrame:
    """Copies of a nuclei tile scaled by ``scale`` and shifted to each of ``origins`` (n, 2), built in one call."""
    kind, coords, (ring_offsets, polygon_offsets) = shapely.to_ragged_array(tile.geometry.to_numpy())
    n, n_coords, n_rings = len(origins), len(coords), len(ring_offsets) - 1
    copies = (coords[None] * scale + origins[:, None]).reshape(-1, 2).round(2)
    rings = np.append((ring_offsets[:-1][None] + n_coords * np.arange(n)[:, None]).ravel(), n * n_coords)
    polygons = np.append((polygon_offsets[:-1][None] + n_rings * np.arange(n)[:, None]).ravel(), n * n_rings)
    geometry = shapely.from_ragged_array(kind, copies, (rings, polygons))
    return gpd.GeoDataFrame({"class": np.tile(tile["class"].to_numpy(), n)}, geometry=geometry)


def write_cellvit(folder: str | Path, sample_id: str, nuclei: gpd.GeoDataFrame) -> tuple[Path, Path]:
    """Write ``{id}_cellvit_seg.parquet`` and ``{id}_cellvit_seg.geojson.zip`` as HEST does.

    The zip holds ``{id}_cellvit_seg.geojson``, a top-level list with one Feature per class (sorted) whose
    MultiPolygon holds each nucleus as ``[exterior_ring]`` (HEST's ``write_geojson``, without its ``indent=4``);
    the parquet is the GeoDataFrame HEST's ``read_gdf`` makes of it, written with ``to_parquet()``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parquet = folder / f"{sample_id}_cellvit_seg.parquet"
    nuclei[["geometry", "class", "cell_id"]].to_parquet(parquet)
    _, coords, (ring_offsets, polygon_offsets) = shapely.to_ragged_array(nuclei.geometry.to_numpy())
    points = coords.tolist()
    starts = ring_offsets[polygon_offsets[:-1]]
    ends = ring_offsets[polygon_offsets[:-1] + 1]  # exterior ring only, as HEST writes
    polygons = [[points[a:b]] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    classes = nuclei["class"].to_numpy()
    features = [
        _cellvit_feature(f"{sample_id}-id-{name}", str(name), [polygons[i] for i in np.flatnonzero(classes == name)])
        for name in np.unique(classes)
    ]
    archive = folder / f"{sample_id}_cellvit_seg.geojson.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(f"{sample_id}_cellvit_seg.geojson", _json_bytes(features))
    return parquet, archive


def _cellvit_feature(feature_id: str, name: str, polygons: list[Any]) -> dict[str, Any]:
    """One class of HEST's CellViT GeoJSON: a MultiPolygon of single-ring polygons, QuPath properties."""
    classification = {"name": name, "color": CELLVIT_COLORS.get(name, [0, 0, 0])}
    return {
        "type": "Feature",
        "id": feature_id,
        "geometry": {"type": "MultiPolygon", "coordinates": polygons},
        "properties": {"objectType": "annotation", "classification": classification},
    }


def _json_bytes(document: Any) -> bytes:
    try:  # msgspec (a zarr dependency) writes floats ~10x faster than json, with the same shortest repr
        import msgspec
    except ImportError:
        return json.dumps(document).encode()
    return msgspec.json.encode(document)


def write_patches(
    path: str | Path,
    slide: np.ndarray,
    adata: ad.AnnData,
    pixel_size_um: float,
    contours: gpd.GeoDataFrame | None = None,
) -> Path:
    """Write ``patches/{id}.h5`` as HEST's ``dump_patches`` does (hestcore ``WSIPatcher.to_h5``, ``initsave_hdf5``).

    224 x 224 px patches at 0.5 µm/px around every spot centre: the source crop of ``round(224 * factor)`` level-0
    px (``factor = 0.5 / pixel_size_um``) starts at ``coords = int(centre - (224 * factor) // 2)``, is padded with
    black off the slide (OpenSlide's transparent pixels) and resized bilinearly (PIL standing in for
    ``cv2.resize``). Patches entirely off the slide are dropped, and, with ``contours``, those less than 15% under
    tissue, as HEST does; so the h5 may have fewer rows than the h5ad.

    Parameters
    ----------
    path
        Output ``.h5``.
    slide
        The slide's level 0, (h, w, 3) uint8.
    adata
        The st AnnData (``obsm['spatial']`` centres, ``obs_names`` barcodes).
    pixel_size_um
        µm per level-0 pixel of the slide.
    contours
        Tissue contours for HEST's tissue filter, or ``None`` to keep every patch on the slide.
    """
    factor = PATCH_PIXEL_SIZE_UM / pixel_size_um
    coords, barcodes, side = hest_patch_coords(adata, factor, slide.shape[:2], contours)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (PATCH_SIZE_PX, PATCH_SIZE_PX, 3)
    with h5py.File(path, "w") as h5:
        img = h5.create_dataset("img", (len(coords), *shape), np.uint8, chunks=(1, *shape), maxshape=(None, *shape))
        for start in range(0, len(coords), 256):  # h5py writes a slab much faster than row by row
            batch = coords[start : start + 256].tolist()
            img[start : start + len(batch)] = np.stack([_patch(slide, x, y, side) for x, y in batch])
        img.attrs.update({"patch_size": PATCH_SIZE_PX, "factor": factor, "pixel_size": pixel_size_um})
        h5.create_dataset("coords", data=coords, chunks=(1, 2), maxshape=(None, 2))
        strings = h5py.string_dtype("utf-8")
        h5.create_dataset("barcode", data=barcodes[:, None], dtype=strings, chunks=(1, 1), maxshape=(None, 1))
    return path


def hest_patch_coords(
    adata: ad.AnnData, factor: float, slide_shape: tuple[int, int], contours: gpd.GeoDataFrame | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """HEST's patch selection: top-left ``coords`` (int64), ``barcodes`` and the crop side in level-0 px."""
    size_src = PATCH_SIZE_PX * factor
    side = round(size_src)  # hestcore: patch_size_src = round(patch_size * downsample)
    height, width = slide_shape
    topleft = np.asarray(adata.obsm["spatial"], dtype=np.float64) - size_src // 2
    x, y = topleft[:, 0], topleft[:, 1]
    on_slide = (x + size_src >= 0) & (x < width) & (y + size_src >= 0) & (y < height)
    coords = topleft[on_slide].astype(np.int64)
    barcodes = np.asarray(adata.obs_names, dtype=object)[on_slide]
    if contours is not None:
        squares = shapely.box(coords[:, 0], coords[:, 1], coords[:, 0] + side, coords[:, 1] + side)
        tissue = shapely.area(shapely.intersection(squares, contours.union_all()))
        under = tissue >= PATCH_TISSUE_THRESHOLD * side**2
        coords, barcodes = coords[under], barcodes[under]
    return coords, barcodes, side


def _patch(slide: np.ndarray, x: int, y: int, side: int) -> np.ndarray:
    crop = np.zeros((side, side, 3), np.uint8)
    height, width = slide.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
    if x1 > x0 and y1 > y0:
        crop[y0 - y : y1 - y, x0 - x : x1 - x] = slide[y0:y1, x0:x1]
    return np.asarray(Image.fromarray(crop).resize((PATCH_SIZE_PX, PATCH_SIZE_PX), Image.BILINEAR))


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
    write_slide(root / "wsis" / f"{sample_id}.tif", slide, pixel_size_um, writer=writer)
    spots, counts = visium_spots(layout)
    adata = hest_st_adata(spots, counts, xenium_mouse_brain().genes, slide, pixel_size_um)
    (root / "st").mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(root / "st" / f"{sample_id}.h5ad")
    contours = tissue_contours(layout, mask)
    write_tissue_contours(root / "tissue_seg" / f"{sample_id}_contours.geojson", contours)
    write_cellvit(root / "cellvit_seg", sample_id, tiled_nuclei(layout, contours, seed=seed))
    write_patches(root / "patches" / f"{sample_id}.h5", slide, adata, pixel_size_um, contours)
    write_metadata(
        root / "metadata" / f"{sample_id}.json", hest_metadata(sample_id, adata, slide.shape[:2], pixel_size_um)
    )
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


# --------------------------------------------------------------------------------------------- Xenium samples
#
# A HEST-1k Xenium sample as HEST writes it (readers.py XeniumReader / pool_transcripts_xenium,
# HESTData.save, utils.copy_processed), built from the real Xenium mouse-brain run: every count of the real
# cell x feature matrix (genes and control probes/codewords) becomes one transcript placed inside its cell,
# the cells are polygons around the real centroids with the real cell and nucleus areas, and the st h5ad is
# HEST's 100 µm pseudo-Visium pooling of those transcripts.

XENIUM_SAMPLE_ID = "XENIUM1"
#: A 20x scan; real HEST Xenium slides are 0.21-0.27 µm/px (40x), coarser keeps fixtures fast.
XENIUM_PIXEL_SIZE_UM = 0.5
#: HEST pools Xenium transcripts into squares of this side (µm); the h5ad's spot_diameter_fullres says 55 µm.
XENIUM_PSEUDO_SPOT_UM = 100.0
XENIUM_UNASSIGNED = "UNASSIGNED"
CellIdType = Literal["int", "str", "bytes"]
_TRANSCRIPT_ID_BASE = 281474976710656  # real 10x transcript ids are large uint64s


@dataclass(frozen=True)
class XeniumFeatures:
    """The real Xenium mouse-brain cell x feature matrix with its control features (541 features)."""

    counts: sp.csr_matrix  # cells x features, same cell order as ``xenium_mouse_brain().cells``
    names: pd.Index
    types: np.ndarray  # 10x feature_type: "Gene Expression", "Blank Codeword", "Negative Control Probe", ...


@cache
def xenium_mouse_brain_features() -> XeniumFeatures:
    """Load every feature of the real Xenium mouse-brain matrix, control probes and codewords included."""
    with h5py.File(example_data_path("xenium_mouse_brain_cell_feature_matrix.h5"), "r") as f:
        m = f["matrix"]
        shape = tuple(m["shape"][:])
        matrix = sp.csc_matrix((m["data"][:], m["indices"][:], m["indptr"][:]), shape=shape)
        names = m["features/name"][:].astype(str)
        types = m["features/feature_type"][:].astype(str)
    return XeniumFeatures(counts=matrix.T.tocsr(), names=pd.Index(names), types=types)


def xenium_cell_ids(ids: np.ndarray) -> np.ndarray:
    """10x string cell ids (XOA >= 1.3 style, e.g. ``1`` → ``"aaaaaaab-1"``): the id's 8 hex digits as ``a``-``p``."""
    ids = np.asarray(ids, dtype=np.uint32)
    digits = (ids[:, None] >> np.arange(28, -1, -4, dtype=np.uint32)) & 0xF
    letters = (digits + ord("a")).astype(np.uint8)
    return np.array([row.tobytes().decode() + "-1" for row in letters], dtype=object)


def xenium_cells_in(crop_um: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Row positions of the real cells whose centroid lies in ``crop_um = (x0, y0, x1, y1)`` (Xenium µm)."""
    cells = xenium_mouse_brain().cells
    if crop_um is None:
        return np.arange(len(cells))
    x0, y0, x1, y1 = crop_um
    x, y = cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy()
    return np.flatnonzero((x >= x0) & (x < x1) & (y >= y0) & (y < y1))


def star_polygons(
    centres: np.ndarray, areas: np.ndarray, *, n_vertices: int = 12, irregularity: float = 0.2, seed: int = 0
) -> np.ndarray:
    """Slightly irregular polygons star-shaped around ``centres`` with exactly the given ``areas``.

    Parameters
    ----------
    centres
        (n, 2) x, y.
    areas
        (n,) areas in the squared unit of ``centres``.
    n_vertices
        Vertices per polygon.
    irregularity
        Relative jitter of the vertex radii.
    seed
        Random seed.

    Returns
    -------
    (n, n_vertices, 2) vertices, counter-clockwise, ring not closed.
    """
    rng = np.random.default_rng(seed)
    n = len(centres)
    step = 2 * np.pi / n_vertices
    angles = step * (np.arange(n_vertices) + rng.uniform(-0.3, 0.3, (n, n_vertices)))
    radii = 1 + irregularity * rng.uniform(-1, 1, (n, n_vertices))
    wedge = np.sin(np.diff(angles, axis=1, append=angles[:, :1] + 2 * np.pi))
    unit_area = 0.5 * (radii * np.roll(radii, -1, axis=1) * wedge).sum(axis=1)
    radii *= np.sqrt(np.asarray(areas, dtype=np.float64) / unit_area)[:, None]
    offsets = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=-1)
    return np.asarray(centres, dtype=np.float64)[:, None, :] + offsets


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


@dataclass(frozen=True)
class _XeniumCells:
    """The cells of a synthetic Xenium sample, in slide pixels."""

    rows: np.ndarray  # positions in the real run
    ids: np.ndarray  # the ids as written (int64, str or bytes objects)
    centres: np.ndarray  # (n, 2) px
    vertices: np.ndarray  # (n, k, 2) px, cell boundary
    nucleus_scale: np.ndarray  # (n,) the nucleus is the cell polygon scaled by this about the centre


def _xenium_cells(rows: np.ndarray, layout: VisiumLayout, id_type: CellIdType, seed: int) -> _XeniumCells:
    cells = xenium_mouse_brain().cells.iloc[rows]
    centres = layout.to_px(cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy())
    areas = cells["cell_area"].to_numpy() / layout.pixel_size_um**2
    vertices = star_polygons(centres, areas, seed=seed)
    scale = np.sqrt(np.minimum(cells["nucleus_area"].to_numpy() / cells["cell_area"].to_numpy(), 1.0))
    return _XeniumCells(rows, _typed_ids(cells["cell_id"].to_numpy(), id_type), centres, vertices, scale)


def _typed_ids(ids: np.ndarray, id_type: CellIdType) -> np.ndarray:
    if id_type == "int":
        return ids.astype(np.int64)
    text = xenium_cell_ids(ids)
    return text if id_type == "str" else np.array([t.encode() for t in text], dtype=object)


def _segmentation_frame(cells: _XeniumCells, scale: np.ndarray | None = None) -> gpd.GeoDataFrame:
    vertices = cells.vertices
    if scale is not None:
        vertices = cells.centres[:, None, :] + (vertices - cells.centres[:, None, :]) * scale[:, None, None]
    closed = np.concatenate([vertices, vertices[:, :1]], axis=1)
    # HEST's groupby_shape keeps the Xenium cell_id, whatever its type, as the (object) index
    return gpd.GeoDataFrame(geometry=shapely.polygons(closed), index=pd.Index(list(cells.ids), dtype=object))


def _write_hest_seg_geojson_zip(path: Path, gdf: gpd.GeoDataFrame, sample_id: str, kind: str) -> None:
    """``write_geojson(gdf, path, '', chunk=True)`` zipped: 10 shards named "0".."9", cell ids lost (issue #88)."""
    n = 10
    shard = np.repeat(np.arange(n), len(gdf) // n + 1)[: len(gdf)]
    rings = shapely.get_coordinates(shapely.get_exterior_ring(gdf.geometry.to_numpy()))
    per_polygon = np.split(rings, np.cumsum(shapely.get_num_coordinates(gdf.geometry.to_numpy()))[:-1])
    features = []
    for group in np.unique(shard):
        polygons = [[p.tolist()] for p, s in zip(per_polygon, shard, strict=True) if s == group]
        color = [255, int(255 * group / n), 0]
        features.append({
            "type": "Feature",
            "id": f"{id(path)}-id-{group}",
            "geometry": {"type": "MultiPolygon", "coordinates": polygons},
            "properties": {"objectType": "annotation", "classification": {"name": str(group), "color": color}},
        })  # fmt: skip
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{sample_id}_xenium_{kind}_seg.geojson", json.dumps(features))


class _TranscriptWriter:
    """Writes the transcripts parquet chunk by chunk and keeps what the pseudo-spot pooling needs."""

    def __init__(self, path: Path, cells: _XeniumCells, *, id_type: CellIdType, geometry: bool, row_group_size: int):
        import pyarrow as pa

        self.path, self.geometry, self.row_group_size = path, geometry, row_group_size
        names = list(xenium_mouse_brain_features().names)
        unassigned: Any = {"int": -1, "str": XENIUM_UNASSIGNED, "bytes": XENIUM_UNASSIGNED.encode()}[id_type]
        # 10x/HEST transcripts of XOA 1.x carry bytes feature names; ids and names are taken from small dictionaries
        as_bytes = id_type != "str"
        self.features = pa.array([n.encode() for n in names] if as_bytes else names)
        self.ids = pa.array([*cells.ids.tolist(), unassigned], type=pa.binary() if id_type == "bytes" else None)
        self.fovs = pa.array([f"{chr(65 + r)}{c + 1}" for r in range(26) for c in range(100)])
        self.writer: Any = None
        self.n_rows = 0
        self.he: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []

    def write(self, columns: dict[str, np.ndarray], owner: np.ndarray, codes: np.ndarray) -> None:
        """Append transcripts: ``owner`` is the cell position (-1: unassigned), ``codes`` the feature position."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = len(codes)
        table = {
            "transcript_id": pa.array(_TRANSCRIPT_ID_BASE + self.n_rows + np.arange(n, dtype=np.uint64)),
            "cell_id": self.ids.take(pa.array(np.where(owner < 0, len(self.ids) - 1, owner))),
            "overlaps_nucleus": columns["overlaps_nucleus"],
            "feature_name": self.features.take(pa.array(codes)),
            "x_location": columns["x_location"],
            "y_location": columns["y_location"],
            "z_location": columns["z_location"],
            "qv": columns["qv"],
            "fov_name": self.fovs.take(pa.array(np.clip(columns["fov"], 0, len(self.fovs) - 1))),
            "nucleus_distance": columns["nucleus_distance"],
            **{k: columns[k] for k in ("he_x", "he_y", "dapi_x", "dapi_y")},
        }
        if self.geometry:
            table["geometry"] = pa.array(shapely.to_wkb(shapely.points(columns["he_x"], columns["he_y"])), pa.binary())
        batch = pa.table(table)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, batch.schema)
        self.writer.write_table(batch, row_group_size=self.row_group_size)
        self.n_rows += n
        self.he.append(np.column_stack([columns["he_x"], columns["he_y"]]))
        self.codes.append(np.asarray(codes, dtype=np.int32))

    def close(self) -> tuple[np.ndarray, np.ndarray]:
        """Finish the file; returns every (he_x, he_y) and feature position, in file order."""
        self.writer.close()
        return np.concatenate(self.he), np.concatenate(self.codes)


def _place_in_cells(
    cells: _XeniumCells, owner: np.ndarray, layout: VisiumLayout, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Transcript columns for transcripts of the given cells (``owner``: cell positions), each inside its cell."""
    k = cells.vertices.shape[1]
    side = rng.integers(k, size=len(owner))
    u, v = rng.random(len(owner)), rng.random(len(owner))
    fold = u + v > 1
    u[fold], v[fold] = 1 - u[fold], 1 - v[fold]
    centre = cells.centres[owner]
    a = cells.vertices[owner, side] - centre
    b = cells.vertices[owner, (side + 1) % k] - centre
    xy = centre + u[:, None] * a + v[:, None] * b  # uniform in one fan triangle of the star polygon
    depth = u + v  # the nucleus (cell scaled by f) holds exactly the points with depth <= f
    scale = cells.nucleus_scale[owner]
    outside = np.clip(1 - scale / np.maximum(depth, 1e-9), 0, None)
    distance = outside * np.linalg.norm(xy - centre, axis=1) * layout.pixel_size_um
    columns = _location_columns(xy, layout, rng)
    columns["overlaps_nucleus"] = (depth <= scale).astype(np.uint8)
    columns["nucleus_distance"] = distance.astype(np.float32)
    return columns


def _location_columns(xy: np.ndarray, layout: VisiumLayout, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ps = layout.pixel_size_um
    morph = xenium_mouse_brain().experiment["pixel_size"]
    x_um = (xy[:, 0] * ps + layout.origin_um[0]).astype(np.float32)
    y_um = (xy[:, 1] * ps + layout.origin_um[1]).astype(np.float32)
    return {
        "x_location": x_um,
        "y_location": y_um,
        "z_location": rng.uniform(6, 16, len(xy)).astype(np.float32),
        "fov": (y_um // 400).astype(np.int64) * 100 + (x_um // 400).astype(np.int64),
        # HEST: he_x = aligned µm / pixel size; dapi_x = µm / morphology pixel size
        "he_x": (x_um.astype(np.float64) - layout.origin_um[0]) / ps,
        "he_y": (y_um.astype(np.float64) - layout.origin_um[1]) / ps,
        "dapi_x": x_um.astype(np.float64) / morph,
        "dapi_y": y_um.astype(np.float64) / morph,
    }


def _good_qv(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(n) < 0.75, 40.0, rng.uniform(20, 40, n)).astype(np.float32)


def _write_cell_chunk(
    writer: _TranscriptWriter,
    cells: _XeniumCells,
    chunk: np.ndarray,
    layout: VisiumLayout,
    rng: np.random.Generator,
    *,
    unassigned_fraction: float,
    low_qv_fraction: float,
) -> None:
    """The transcripts of the cells ``chunk``: one per real count, plus low-quality and unassigned ones."""
    counts = xenium_mouse_brain_features().counts[cells.rows[chunk]].tocoo()
    owner = chunk[np.repeat(counts.row, counts.data)]
    codes = np.repeat(counts.col, counts.data).astype(np.int64)
    extra = rng.choice(len(owner), size=round(low_qv_fraction * len(owner)), replace=True)
    owner, codes = np.concatenate([owner, owner[extra]]), np.concatenate([codes, codes[extra]])
    qv = np.concatenate([_good_qv(len(owner) - len(extra), rng), rng.uniform(0, 19.5, len(extra)).astype(np.float32)])
    columns = _place_in_cells(cells, owner, layout, rng)
    n_free = round(unassigned_fraction * len(owner))
    if n_free:
        free, free_codes = _unassigned(cells, chunk, n_free, layout, rng)
        columns = {k: np.concatenate([v, free[k]]) for k, v in columns.items()}
        owner = np.concatenate([owner, np.full(n_free, -1)])
        codes = np.concatenate([codes, free_codes])
        qv = np.concatenate([qv, _good_qv(n_free, rng)])
    order = rng.permutation(len(codes))  # 10x files are ordered by FOV, not by cell
    columns = {k: v[order] for k, v in columns.items()}
    columns["qv"] = qv[order]
    writer.write(columns, owner[order], codes[order])


def _unassigned(
    cells: _XeniumCells, chunk: np.ndarray, n: int, layout: VisiumLayout, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Transcripts outside cells, scattered around them, with features drawn from the run's feature totals."""
    near = rng.choice(chunk, size=n)
    spread = np.sqrt(xenium_mouse_brain().cells["cell_area"].mean() / np.pi) / layout.pixel_size_um
    xy = np.clip(cells.centres[near] + rng.normal(0, 1.5 * spread, (n, 2)), 0, [layout.width - 1, layout.height - 1])
    columns = _location_columns(xy, layout, rng)
    columns["overlaps_nucleus"] = np.zeros(n, np.uint8)
    distance = np.linalg.norm(xy - cells.centres[near], axis=1) * layout.pixel_size_um
    columns["nucleus_distance"] = distance.astype(np.float32)
    totals = np.asarray(xenium_mouse_brain_features().counts.sum(axis=0)).ravel()
    return columns, rng.choice(len(totals), size=n, p=totals / totals.sum())


def hest_xenium_st_adata(
    he_xy: np.ndarray, codes: np.ndarray, names: pd.Index, slide: np.ndarray, pixel_size_um: float
) -> ad.AnnData:
    """HEST's ``pool_transcripts_xenium``: transcripts summed into 100 µm squares on a grid from their min x/y.

    ``X`` is the dense uint16 grid, var order is the order of first appearance of each feature in the file,
    obs names ``"{row:03d}x{col:03d}"`` are grid positions, empty squares are dropped (``sc.pp.filter_cells``,
    which adds ``n_counts``), and ``uns['spatial']['ST']`` is ``register_downscale_img``'s (with HEST's default
    55 µm ``spot_diameter_fullres``, although the squares are 100 µm).
    """
    side = XENIUM_PSEUDO_SPOT_UM / pixel_size_um
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
    _register_downscale_img(adata, slide, pixel_size_um)
    return adata


def _xenium_qc(adata: ad.AnnData) -> None:
    x = adata.X.astype(np.int64)
    adata.obs["n_genes_by_counts"] = (x > 0).sum(axis=1)
    adata.obs["total_counts"] = x.sum(axis=1)
    adata.obs["log1p_total_counts"] = np.log1p(adata.obs["total_counts"])
    adata.var["mito"] = adata.var_names.str.lower().str.startswith("mt-")
    adata.var["n_cells_by_counts"] = (x > 0).sum(axis=0)
    adata.var["total_counts"] = x.sum(axis=0)


def _register_downscale_img(
    adata: ad.AnnData, slide: np.ndarray, pixel_size_um: float, spot_size_um: float = VISIUM_SPOT_DIAMETER_UM
) -> None:
    """Rebuild ``uns['spatial']['ST']`` as HEST's ``register_downscale_img``: a 1000-px thumbnail, two factors."""
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


def hest_xenium_metadata(sample_id: str, adata: ad.AnnData, slide_shape: tuple[int, int], pixel_size_um: float) -> dict:
    """A Xenium ``metadata/{id}.json`` as HEST builds it: ``experiment.xenium`` merged in, then the catalog row.

    Key order and values follow the real TENX95 file: the (bogus) embedded pixel size, every key of the real
    ``experiment.xenium``, HEST's computed keys with ``spot_diameter``/``inter_spot_dist`` NaN (the catalog row
    overrides them), then the catalog row (from the real ZEN61 template, made Xenium).
    """
    h, w = slide_shape
    catalog = hest_metadata_template()
    for key in ("pixel_size_um_embedded", "pixel_size_um_estimated", "fullres_height", "fullres_width",
                "spots_under_tissue", "spot_estimate_dist", "spot_diameter", "inter_spot_dist", "adata_nb_col",
                "fullres_px_width", "fullres_px_height"):  # fmt: skip
        catalog.pop(key, None)
    catalog.update(
        dataset_title="Fresh Frozen Mouse Brain for Xenium Explorer Demo (hest-spatialdata synthetic H&E)",
        id=sample_id,
        image_filename=f"{sample_id}.tif",
        organ="Brain",
        disease_state="Healthy",
        st_technology="Xenium",
        data_publication_date="2022-11-29",
        license="Creative Commons Attribution",
        download_page_link1="https://www.10xgenomics.com/datasets/fresh-frozen-mouse-brain-for-xenium-explorer-demo-1-standard",
        preservation_method="Fresh Frozen",
        nb_genes=adata.n_vars,
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
        "spots_under_tissue": adata.n_obs,
        "adata_nb_col": adata.n_vars,
        "fullres_px_width": w,
        "fullres_px_height": h,
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
) -> Path:
    """Write a Xenium sample in HEST-1k layout from the real Xenium mouse-brain run.

    Writes ``wsis/{id}.tif``, ``metadata/{id}.json``, ``st/{id}.h5ad`` (100 µm pseudo-spots),
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
    cells = _xenium_cells(rows, layout, cell_id_type, seed)
    slide = he_texture(layout.height, layout.width, seed=seed, tissue_mask=_cells_mask(layout, cells.centres))
    write_slide(root / "wsis" / f"{sample_id}.tif", slide, pixel_size_um, writer=writer)
    _write_xenium_seg(root, sample_id, cells, geojson=geojson)
    path = root / "transcripts" / f"{sample_id}_transcripts.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    out = _TranscriptWriter(
        path, cells, id_type=cell_id_type, geometry=transcripts_geometry, row_group_size=row_group_size
    )
    for chunk in np.array_split(np.arange(len(rows)), max(1, len(rows) // 4096)):
        _write_cell_chunk(out, cells, chunk, layout, rng, unassigned_fraction=unassigned_fraction,
                          low_qv_fraction=low_qv_fraction)  # fmt: skip
    he_xy, codes = out.close()
    adata = hest_xenium_st_adata(he_xy, codes, xenium_mouse_brain_features().names, slide, pixel_size_um)
    (root / "st").mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(root / "st" / f"{sample_id}.h5ad")
    meta = hest_xenium_metadata(sample_id, adata, slide.shape[:2], pixel_size_um)
    write_metadata(root / "metadata" / f"{sample_id}.json", meta)
    return root


def _write_xenium_seg(root: Path, sample_id: str, cells: _XeniumCells, *, geojson: bool) -> None:
    folder = root / "xenium_seg"
    folder.mkdir(parents=True, exist_ok=True)
    for kind, scale in (("cell", None), ("nucleus", cells.nucleus_scale)):
        gdf = _segmentation_frame(cells, scale)
        gdf.to_parquet(folder / f"{sample_id}_xenium_{kind}_seg.parquet")
        if geojson:
            _write_hest_seg_geojson_zip(folder / f"{sample_id}_xenium_{kind}_seg.geojson.zip", gdf, sample_id, kind)
