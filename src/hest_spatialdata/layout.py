"""Where each part of a HEST-1k sample lives in a HEST root, and which parts exist."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from hest_spatialdata.errors import HestInputError

#: Sub-folders of a HEST root that hold per-sample files named after the sample id.
SAMPLE_FOLDERS = ("wsis", "st", "metadata")


@dataclass(frozen=True)
class SampleFiles:
    """Paths of the files of one sample in a HEST root; ``None`` where the part is absent.

    The names are the ones of the HEST-1k release on the hub (``reference/hest_format.md`` section 1).
    Legacy names (June 2024 ``{id}_cellvit_seg.zip``, an unzipped ``.geojson``) are found too.
    """

    root: Path
    sample_id: str
    wsi: Path | None = None
    st: Path | None = None
    metadata: Path | None = None
    patches: Path | None = None
    cellvit: Path | None = None
    tissue: Path | None = None
    xenium_cells: Path | None = None
    xenium_nuclei: Path | None = None
    transcripts: Path | None = None

    def present(self) -> dict[str, Path]:
        """Parts that exist on disk, by part name."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("root", "sample_id") and getattr(self, f.name) is not None
        }


def candidate_paths(root: Path, sample_id: str) -> dict[str, tuple[Path, ...]]:
    """Every file name a part of ``sample_id`` may have, preferred name first."""
    i = sample_id
    return {
        "wsi": (root / "wsis" / f"{i}.tif", root / "wsis" / f"{i}.tiff"),
        "st": (root / "st" / f"{i}.h5ad",),
        "metadata": (root / "metadata" / f"{i}.json",),
        "patches": (root / "patches" / f"{i}.h5",),
        "cellvit": (
            root / "cellvit_seg" / f"{i}_cellvit_seg.parquet",
            root / "cellvit_seg" / f"{i}_cellvit_seg.geojson.zip",
            root / "cellvit_seg" / f"{i}_cellvit_seg.geojson",
            root / "cellvit_seg" / f"{i}_cellvit_seg.zip",
        ),
        "tissue": (root / "tissue_seg" / f"{i}_contours.geojson",),
        "xenium_cells": (
            root / "xenium_seg" / f"{i}_xenium_cell_seg.parquet",
            root / "xenium_seg" / f"{i}_xenium_cell_seg.geojson.zip",
        ),
        "xenium_nuclei": (
            root / "xenium_seg" / f"{i}_xenium_nucleus_seg.parquet",
            root / "xenium_seg" / f"{i}_xenium_nucleus_seg.geojson.zip",
        ),
        "transcripts": (root / "transcripts" / f"{i}_transcripts.parquet",),
    }


def sample_files(hest_dir: str | Path, sample_id: str) -> SampleFiles:
    """Locate the files of one sample.

    Parameters
    ----------
    hest_dir
        A HEST root (the folder holding ``wsis/``, ``st/``, ``metadata/``, ...).
    sample_id
        The sample id, e.g. ``TENX95``.

    Returns
    -------
    The paths found; absent parts are ``None``.

    Raises
    ------
    HestInputError
        If the root does not exist or no file of the sample is found in it.
    """
    root = Path(hest_dir)
    if not root.is_dir():
        raise HestInputError(sample_id, root, "HEST directory not found")
    found = {
        part: next((p for p in paths if p.is_file()), None) for part, paths in candidate_paths(root, sample_id).items()
    }
    if not any(found.values()):
        known = list_sample_ids(root)
        hint = f"; samples here: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}" if known else ""
        raise HestInputError(sample_id, root, f"unknown sample id: no file of it in this HEST directory{hint}")
    return SampleFiles(root=root, sample_id=sample_id, **found)


def list_sample_ids(hest_dir: str | Path) -> list[str]:
    """Sample ids present in a HEST root (having a slide, an st h5ad or a metadata JSON), sorted naturally."""
    root = Path(hest_dir)
    ids: set[str] = set()
    for folder, suffixes in (("wsis", (".tif", ".tiff")), ("st", (".h5ad",)), ("metadata", (".json",))):
        for path in (root / folder).glob("*"):
            if path.suffix in suffixes and path.is_file() and not path.name.startswith("."):
                ids.add(path.stem)
    return sorted(ids, key=_natural_key)


def _natural_key(sample_id: str) -> tuple[str, int, str]:
    prefix = sample_id.rstrip("0123456789")
    digits = sample_id[len(prefix) :]
    return (prefix, int(digits) if digits else -1, sample_id)
