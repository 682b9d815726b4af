"""Which 10x technology a folder holds, and where its outputs are (a run folder or its ``outs/``)."""

from __future__ import annotations

from pathlib import Path

from hest_spatialdata._constants import Technology
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.tenx import _files as files


def find_outputs(path: str | Path, sample_id: str | None = None) -> tuple[Technology, Path]:
    """The technology of a 10x output folder and the folder holding its files.

    ``path`` may be the Space Ranger ``outs/`` folder, the run folder above it, or a Xenium output bundle.

    Raises
    ------
    HestInputError
        If the folder is missing or holds no recognised 10x output (the message says what was looked for).
    """
    path = Path(path)
    if not path.is_dir():
        raise HestInputError(sample_id, path, "10x output folder not found")
    for folder in (path, path / "outs"):
        technology = detect(folder)
        if technology is not None:
            return technology, folder
    raise HestInputError(
        sample_id,
        path,
        "not a 10x output folder: no Xenium manifest (experiment.xenium), no Visium HD "
        f"{files.BINNED_OUTPUTS}/square_XXXum/ and no Space Ranger {files.SPATIAL}/ with counts "
        f"({files.FILTERED_H5}, {files.RAW_H5} or a {files.FILTERED_MEX}/ MatrixMarket folder), here or in outs/",
    )


def detect(folder: Path) -> Technology | None:
    """The 10x technology whose outputs are directly in ``folder``, or ``None``."""
    if (folder / files.XENIUM_MANIFEST).is_file():
        return Technology.XENIUM
    if (folder / files.BINNED_OUTPUTS).is_dir() and any(
        (folder / files.BINNED_OUTPUTS / files.HD_BIN_FOLDER.format(size=size)).is_dir()
        for size in files.HD_BIN_SIZES_UM
    ):
        return Technology.VISIUM_HD
    if (folder / files.SPATIAL).is_dir() and counts_source(folder) is not None:
        return Technology.VISIUM
    return None


def counts_source(folder: Path) -> Path | None:
    """The counts HEST reads, in its order: the filtered h5, the raw h5, a MatrixMarket folder (filtered first)."""
    for name in (files.FILTERED_H5, files.RAW_H5):
        if (folder / name).is_file():
            return folder / name
    for name in (files.FILTERED_MEX, files.RAW_MEX):
        if any((folder / name / matrix).is_file() for matrix in files.MEX_MATRIX):
            return folder / name
    return None
