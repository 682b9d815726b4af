"""HEST metadata: the per-sample ``metadata/{id}.json`` and what the converter needs from it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hest_spatialdata._constants import Technology
from hest_spatialdata.errors import HestInputError

#: Spot diameters in µm when the metadata has none (reference/hest_format.md section 1.1).
DEFAULT_SPOT_DIAMETER_UM = {Technology.VISIUM: 55.0, Technology.ST: 100.0}
#: Side of the square pseudo-spots in µm (Xenium transcripts pooled in 100 µm squares, Visium HD 16 µm bins in 128 µm).
PSEUDO_SPOT_SIDE_UM = {Technology.XENIUM: 100.0, Technology.VISIUM_HD: 128.0}


def read_metadata(path: str | Path, sample_id: str | None = None) -> dict[str, Any]:
    """Read a HEST ``metadata/{id}.json``.

    HEST dumps missing values as bare ``NaN`` tokens (not strict JSON); they are accepted and
    returned as ``None``, so the result can be written as strict JSON.

    Parameters
    ----------
    path
        The JSON file.
    sample_id
        Used in error messages.

    Returns
    -------
    The metadata with every NaN / infinity replaced by ``None``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HestInputError(sample_id, path, "metadata JSON not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HestInputError(sample_id, path, f"metadata JSON unreadable: {e}") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise HestInputError(sample_id, path, f"metadata JSON is invalid or truncated ({e})") from None
    if not isinstance(meta, dict):
        raise HestInputError(sample_id, path, f"metadata JSON must hold an object, not {type(meta).__name__}")
    return nan_to_none(meta)


def nan_to_none(value: Any) -> Any:
    """Replace NaN and infinities by ``None``, recursively through dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [nan_to_none(v) for v in value]
    return value


def pixel_size_um(meta: dict[str, Any], sample_id: str | None = None, path: str | Path | None = None) -> float:
    """The µm per level-0 pixel of the HEST slide: ``pixel_size_um_estimated``.

    The TIFF resolution tags (10x off) and ``pixel_size_um_embedded`` are never used.

    Raises
    ------
    HestInputError
        If the value is missing, NaN, not a number or not positive.
    """
    value = meta.get("pixel_size_um_estimated")
    if value is None:
        raise HestInputError(sample_id, path, "pixel_size_um_estimated is missing or NaN in the metadata")
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise HestInputError(sample_id, path, f"pixel_size_um_estimated is not a number: {value!r}") from None
    if not math.isfinite(size) or size <= 0:
        raise HestInputError(sample_id, path, f"pixel_size_um_estimated must be a positive number, got {value!r}")
    return size


def technology(meta: dict[str, Any], sample_id: str | None = None, path: str | Path | None = None) -> Technology:
    """Normalise ``st_technology`` (``"Visium HD 3'"`` is Visium HD, ``"Xenium 5k"`` is Xenium)."""
    raw = str(meta.get("st_technology") or "").strip()
    lowered = raw.lower()
    if lowered.startswith("visium hd"):
        return Technology.VISIUM_HD
    if lowered.startswith("visium"):
        return Technology.VISIUM
    if lowered.startswith("xenium"):
        return Technology.XENIUM
    if lowered.startswith("spatial transcriptomics") or lowered == "st":
        return Technology.ST
    raise HestInputError(sample_id, path, f"unknown st_technology {raw!r} in the metadata")


def spot_diameter_um(meta: dict[str, Any], tech: Technology) -> float:
    """Diameter of the round spots (Visium, ST) in µm: the metadata's ``spot_diameter``, else the technology's."""
    value = meta.get("spot_diameter")
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    return DEFAULT_SPOT_DIAMETER_UM[tech]
