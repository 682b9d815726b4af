"""``st/{id}.h5ad``: the spots (``spots`` shapes) and their expression (``table``).

``obsm['spatial']`` holds the spot centres as (x, y) level-0 pixels of the slide. Visium and ST spots are
circles of diameter ``spot_diameter`` µm; Xenium rows are square pseudo-spots (transcripts pooled by HEST, nominally
100 µm) and Visium HD rows square bins (128 µm), so those are written as squares, not as HEST's 55 µm circles. The
side of the squares is the spacing of their centres' grid (HEST pooled some Xenium samples at about 58 µm, e.g.
TENX122 and NCBI784), recorded in ``attrs["hest"]["spots"]``; a side other than the nominal one is warned about.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import anndata as ad
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from spatialdata.models import ShapesModel, TableModel

from hest_spatialdata._constants import METADATA_UNS_KEY, REGION_KEY, SPOT_INSTANCE_KEY, Elements
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._checks import check_on_slide, check_unique, reason, warn
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.source.metadata import PSEUDO_SPOT_SIDE_UM, spot_diameter_um

_INVALID_NAME_CHARS = re.compile(r"[^\w.\-]")
#: A measured square side further than this (relative) from the nominal one is warned about.
SIDE_TOLERANCE = 0.02


def read(path: Path, ctx: SampleContext, elements: frozenset[Elements]) -> dict[str, gpd.GeoDataFrame | ad.AnnData]:
    """Reader contract (see :mod:`hest_spatialdata.readers`): ``spots`` and ``table`` from ``st/{id}.h5ad``.

    The spots are always made: the table annotates them.
    """
    spots, table = read_st(path, ctx)
    return {Elements.SPOTS.value: spots} | ({Elements.TABLE.value: table} if Elements.TABLE in elements else {})


def read_st(path: str | Path, ctx: SampleContext) -> tuple[gpd.GeoDataFrame, ad.AnnData]:
    """Read the spots and the expression table of a sample.

    Parameters
    ----------
    path
        ``st/{id}.h5ad``.
    ctx
        The sample's context (technology, pixel size, slide size, metadata).

    Returns
    -------
    ``(spots, table)``: the spots as shapes indexed by ``obs_names``, and the AnnData annotating them
    (``region_key="region"``, ``instance_key="spot_id"``) with the counts unchanged.
    """
    adata = _read_h5ad(path, ctx.sample_id)
    check_unique(adata.obs_names, ctx, path, what="spot names (obs_names)")
    centres = _spot_centres(adata, path, ctx)
    spots = spot_shapes(centres, pd.Index(adata.obs_names, dtype=str), ctx)
    return spots, spot_table(adata, ctx)


def spot_shapes(centres: np.ndarray, index: pd.Index, ctx: SampleContext) -> gpd.GeoDataFrame:
    """Spots as circles (Visium, ST) or squares (Xenium, Visium HD) centred on ``centres`` (x, y px).

    The squares' side is :func:`grid_spacing` of the centres; it and the nominal side go to
    ``ctx.shared["spots"]`` (then ``attrs["hest"]["spots"]``).
    """
    if ctx.technology in PSEUDO_SPOT_SIDE_UM:
        nominal_um = PSEUDO_SPOT_SIDE_UM[ctx.technology]
        side_px = grid_spacing(centres)
        side_px = nominal_um / ctx.pixel_size_um if side_px is None else side_px
        _record_square_side(ctx, side_px * ctx.pixel_size_um, nominal_um)
        half = side_px / 2
        x, y = centres[:, 0], centres[:, 1]
        squares = gpd.GeoDataFrame(geometry=shapely.box(x - half, y - half, x + half, y + half), index=index)
        return ShapesModel.parse(squares, transformations=ctx.transformations())
    radius = spot_diameter_um(ctx.metadata, ctx.technology) / ctx.pixel_size_um / 2
    return ShapesModel.parse(
        centres, geometry=0, radius=np.full(len(centres), radius), index=index, transformations=ctx.transformations()
    )


def grid_spacing(centres: np.ndarray) -> float | None:
    """The spacing (px) of a square grid of centres with gaps: the median distance to the nearest neighbour.

    ``None`` for fewer than two centres.
    """
    if len(centres) < 2:
        return None
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(centres).query(centres, k=2)
    return float(np.median(distances[:, 1]))


def _record_square_side(ctx: SampleContext, side_um: float, nominal_um: float) -> None:
    ctx.shared["spots"] = {
        "shape": "square",
        "side_um": round(side_um, 3),
        "side_from": "spacing of the centres",
        "nominal_side_um": nominal_um,
    }
    if abs(side_um / nominal_um - 1) > SIDE_TOLERANCE:
        warn(ctx, None, f"{ctx.technology.value} pseudo-spots are {side_um:.1f} µm squares (the spacing of their "
             f"centres), not the nominal {nominal_um:g} µm; drawn at {side_um:.1f} µm")  # fmt: skip


def spot_table(adata: ad.AnnData, ctx: SampleContext) -> ad.AnnData:
    """The st AnnData made into a SpatialData table annotating ``spots``; ``X`` and ``obs_names`` unchanged."""
    table = adata.copy()
    _keep_original_column(table.obs, REGION_KEY)
    _keep_original_column(table.obs, SPOT_INSTANCE_KEY)
    table.obs[REGION_KEY] = pd.Categorical([Elements.SPOTS.value] * table.n_obs)
    table.obs[SPOT_INSTANCE_KEY] = np.asarray(table.obs_names, dtype=object).astype(str)
    table.var_names = valid_var_names(table.var, table.var_names)
    table.uns[METADATA_UNS_KEY] = json.dumps(ctx.metadata, ensure_ascii=False, allow_nan=False)
    return TableModel.parse(table, region=Elements.SPOTS.value, region_key=REGION_KEY, instance_key=SPOT_INSTANCE_KEY)


def valid_var_names(var: pd.DataFrame, names: pd.Index) -> pd.Index:
    r"""Gene names spatialdata accepts (``[A-Za-z0-9_.-]``, unique); the originals are kept in ``var['gene_name']``.

    The replacement is HEST's own (``re.sub(r"[^\w\._-]", "_", name)``), so names match HEST's
    ``to_spatial_data()``.
    """
    originals = pd.Index(names, dtype=str)
    if "gene_name" in var.columns and not var["gene_name"].astype(str).equals(pd.Series(originals, index=var.index)):
        _keep_original_column(var, "gene_name")
    var["gene_name"] = np.asarray(originals, dtype=object)
    cleaned = pd.Index([_INVALID_NAME_CHARS.sub("_", name) for name in originals])
    return _make_unique(cleaned)


def _make_unique(names: pd.Index) -> pd.Index:
    if names.is_unique:
        return names
    counts: dict[str, int] = {}
    unique = []
    taken = set(names)
    for name in names:
        seen = counts.get(name, 0)
        counts[name] = seen + 1
        candidate = name
        while seen and candidate in taken:
            candidate = f"{name}-{seen}"
            seen += 1
        taken.add(candidate)
        unique.append(candidate)
    return pd.Index(unique)


def _keep_original_column(frame: pd.DataFrame, column: str) -> None:
    if column in frame.columns:
        frame.rename(columns={column: f"{column}_original"}, inplace=True)


def _read_h5ad(path: str | Path, sample_id: str) -> ad.AnnData:
    path = Path(path)
    if not path.is_file():
        raise HestInputError(sample_id, path, "st h5ad not found")
    try:
        adata = ad.read_h5ad(path)
    except Exception as e:  # h5py/anndata raise OSError, KeyError, ValueError ... on truncated files
        raise HestInputError(sample_id, path, f"st h5ad unreadable or truncated ({reason(e)})") from e
    return adata


def _spot_centres(adata: ad.AnnData, path: str | Path, ctx: SampleContext) -> np.ndarray:
    if "spatial" not in adata.obsm:
        raise HestInputError(ctx.sample_id, path, "obsm['spatial'] (spot centres) is missing")
    centres = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    if centres.ndim != 2 or centres.shape[1] != 2:
        raise HestInputError(ctx.sample_id, path, f"obsm['spatial'] must be (n_spots, 2), got {centres.shape}")
    check_on_slide(centres, ctx, path, what="spot centres (obsm['spatial'])")
    return centres
