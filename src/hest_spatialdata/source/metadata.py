"""HEST metadata: the per-sample ``metadata/{id}.json`` and what the converter needs from it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata._constants import Technology
from hest_spatialdata.errors import HestInputError

if TYPE_CHECKING:
    import pandas as pd

#: Spot diameters in µm when the metadata has none (docs/hest_format.md section 1.1).
DEFAULT_SPOT_DIAMETER_UM = {Technology.VISIUM: 55.0, Technology.ST: 100.0}
#: Nominal side of the square pseudo-spots in µm (Xenium transcripts pooled in 100 µm squares, Visium HD 16 µm bins
#: in 128 µm); the spots reader draws them at their centres' spacing, warning where it differs.
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


def technology_name(raw: Any) -> str:
    """Normalise an ``st_technology`` value as :func:`technology` does; unknown values are returned stripped."""
    try:
        return technology({"st_technology": raw}).value
    except HestInputError:
        return str(raw or "").strip()


def read_catalog(path: str | Path) -> pd.DataFrame:
    """Read a HEST catalog CSV (``HEST_v1_*_0.csv``, one row per sample).

    The hub's CSVs may start with a UTF-8 BOM (``HEST_v1_1_0.csv`` does, with CRLF line ends), hold empty strings for
    missing values and dates in mixed formats (``7/31/24``, ``23-Dec-23``, ``Jan 19, 2023``, ``None (internal)``).

    Parameters
    ----------
    path
        The CSV file.

    Returns
    -------
    One row per sample, ``id`` as text. Empty cells are missing values (other text, e.g. ``"NA"``, is kept), the raw
    ``data_publication_date`` is kept and parsed into ``publication_date`` (``NaT`` where it is not a date), and
    ``technology`` holds the normalised ``st_technology`` (``"Visium HD 3'"`` is ``"Visium HD"``).

    Raises
    ------
    HestInputError
        If the file is missing, unreadable or has no unique ``id`` column.
    """
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, encoding="utf-8-sig", dtype={"id": str}, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise HestInputError(None, path, "catalog CSV not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # pandas' ParserError is a ValueError
        raise HestInputError(None, path, f"catalog CSV unreadable: {e}") from None
    if "id" not in frame.columns or frame["id"].isna().any() or not frame["id"].is_unique:
        raise HestInputError(None, path, "not a HEST catalog: it needs an 'id' column of unique sample ids")
    frame["id"] = frame["id"].str.strip()
    if "data_publication_date" in frame.columns:
        frame["publication_date"] = pd.to_datetime(frame["data_publication_date"], format="mixed", errors="coerce")
    if "st_technology" in frame.columns:
        frame["technology"] = frame["st_technology"].map(technology_name)
    return frame
