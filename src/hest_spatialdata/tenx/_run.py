"""What a technology module is given (:class:`ImportRequest`) and returns (:class:`TenxRun`), and the metrics CSV.

The contract of a technology module is in :mod:`hest_spatialdata.tenx`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hest_spatialdata._constants import Technology
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._context import SampleContext
from hest_spatialdata.source.metadata import nan_to_none

if TYPE_CHECKING:
    import anndata as ad


@dataclass(frozen=True)
class ImportRequest:
    """What the user asked to import (``hest-to-sdata import``'s arguments).

    Parameters
    ----------
    path
        The folder the user gave (a run folder, its ``outs/``, or a Xenium bundle).
    folder
        The folder holding the 10x files (:func:`hest_spatialdata.tenx._detect.find_outputs`).
    sample_id
        The id of the store (``{id}.zarr``), and of the sample in cohorts.
    image
        The full-resolution H&E (TIFF / OME-TIFF / SVS); every coordinate of the store is in its level-0 pixels.
    alignment
        An alignment file (a Loupe alignment JSON for Visium, Xenium Explorer's matrix CSV for Xenium).
    nuclei
        A nuclei segmentation in level-0 px of ``image`` (CellViT GeoJSON as HEST ships it, any GeoJSON of
        polygons, or a GeoParquet).
    metadata
        The user's metadata (organ, species, patient ...), merged over the computed keys (which it may not replace).
    """

    path: Path
    folder: Path
    sample_id: str
    image: Path
    alignment: Path | None = None
    nuclei: Path | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class TenxRun:
    """What a technology module read of a run (see the contract in :mod:`hest_spatialdata.tenx`).

    Parameters
    ----------
    technology
        The technology.
    pixel_size_um
        µm per level-0 px of the H&E, derived as HEST derives it (from the spots' spacing for Visium).
    centres
        ``(n, 2)`` spot (or bin, pseudo-spot) centres, (x, y) level-0 px of the H&E, in the order of ``table``.
    table
        The counts, unchanged, one row per spot (``obs_names`` the spot names), ``obsm["spatial"] = centres``.
    metadata
        What HEST writes into the sample's metadata JSON for this technology: the vendor's metrics and the keys
        computed while reading (``spot_diameter``, ``inter_spot_dist``, ``spots_under_tissue``, ...).
    source_files
        The files read, by role (``"counts"``, ``"tissue_positions"``, ...), for ``attrs["hest"]`` and messages.
    positions_file
        The file the centres come from (named when they fall off the H&E).
    extra_names
        Elements the module adds beyond the common ones (e.g. ``xenium_cells``).
    extra
        ``extra(ctx, wanted)`` -> those elements (lazy where large), for the wanted names among ``extra_names``.
    """

    technology: Technology
    pixel_size_um: float
    centres: np.ndarray
    table: ad.AnnData
    metadata: dict[str, Any]
    source_files: dict[str, Path]
    positions_file: Path
    extra_names: tuple[str, ...] = ()
    extra: Callable[[SampleContext, frozenset[str]], dict[str, Any]] | None = None


def read_metrics(path: Path | None, sample_id: str) -> dict[str, Any]:
    """The first row of a Space Ranger ``metrics_summary.csv`` as a dict (HEST's ``metric_file_do_dict``)."""
    if path is None or not path.is_file():
        return {}
    try:
        rows = pd.read_csv(path).to_dict("records")
    except Exception as e:  # pandas raises many types on a bad CSV
        raise HestInputError(sample_id, path, f"metrics CSV unreadable ({type(e).__name__}: {e})") from e
    return nan_to_none({str(k): _plain(v) for k, v in rows[0].items()}) if rows else {}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
