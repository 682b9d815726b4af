"""What the Visium and Xenium examples share: HEST file names, the slide frame, ``uns['spatial']``, the metadata.

Every HEST path the example writes comes from the layout registry (:data:`hest_spatialdata.source.layout.PARTS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from hest_spatialdata.source.layout import PARTS, Part

if TYPE_CHECKING:
    import anndata as ad

VISIUM_SPOT_DIAMETER_UM = 55.0


def hest_file_name(part: Part, sample_id: str, name: int = 0) -> str:
    """The HEST file name of ``part`` for ``sample_id``, from the layout registry.

    Parameters
    ----------
    part
        The source part.
    sample_id
        The sample id.
    name
        Which of the part's file names (0: the preferred one).

    Returns
    -------
    The bare file name, e.g. ``EXAMPLE1_cellvit_seg.geojson.zip``.
    """
    return PARTS[part].path("", sample_id, name).name


@dataclass(frozen=True)
class VisiumLayout:
    """Where the real Xenium tissue sits on the synthetic slide (the Visium and the Xenium examples alike)."""

    pixel_size_um: float
    origin_um: tuple[float, float]  # µm of the Xenium frame at slide pixel (0, 0)
    height: int
    width: int

    def to_px(self, x_um: np.ndarray, y_um: np.ndarray) -> np.ndarray:
        """Xenium µm → slide level-0 px, as (n, 2) (x, y)."""
        return np.column_stack(
            [(x_um - self.origin_um[0]) / self.pixel_size_um, (y_um - self.origin_um[1]) / self.pixel_size_um]
        )


def register_downscale_img(
    adata: ad.AnnData, slide: np.ndarray, pixel_size_um: float, spot_size_um: float = VISIUM_SPOT_DIAMETER_UM
) -> None:
    """Rebuild ``uns['spatial']['ST']`` as HEST's ``register_downscale_img``: a 1000-px thumbnail, two factors.

    Parameters
    ----------
    adata
        The st AnnData, updated in place.
    slide
        The slide's level 0, (h, w, 3) uint8.
    pixel_size_um
        µm per level-0 pixel.
    spot_size_um
        Spot diameter written as ``spot_diameter_fullres`` (in px).
    """
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


def sample_fields(sample_id: str, adata: ad.AnnData, slide_shape: tuple[int, int], pixel_size_um: float) -> dict:
    """The metadata fields a sample's own files give: its id and slide name, the slide's size, spot and gene numbers.

    Parameters
    ----------
    sample_id
        The sample id.
    adata
        The st AnnData (spot and gene numbers).
    slide_shape
        (height, width) of the slide's level 0.
    pixel_size_um
        µm per level-0 pixel.

    Returns
    -------
    ``id``, ``image_filename``, ``pixel_size_um_estimated``, ``fullres_{height,width}``,
    ``fullres_px_{height,width}``, ``spots_under_tissue``, ``adata_nb_col`` and ``nb_genes``.
    """
    h, w = slide_shape
    return {
        "id": sample_id,
        "image_filename": hest_file_name(Part.WSI, sample_id),
        "pixel_size_um_estimated": pixel_size_um,
        "fullres_height": h,
        "fullres_width": w,
        "fullres_px_height": h,
        "fullres_px_width": w,
        "spots_under_tissue": adata.n_obs,
        "adata_nb_col": adata.n_vars,
        "nb_genes": adata.n_vars,
    }


def write_metadata(path: str | Path, meta: dict[str, Any]) -> Path:
    """Write a metadata JSON as HEST does (``json.dump`` leaves NaN as bare ``NaN`` tokens).

    Parameters
    ----------
    path
        Output ``.json`` (its folder is created).
    meta
        The metadata.

    Returns
    -------
    ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, allow_nan=True), encoding="utf-8")
    return path
