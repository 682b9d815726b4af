"""Finding samples and their files in a HEST root, local or remote.

The registry (:mod:`hest_spatialdata.layout`) says which names to look for; this module looks: in a local folder
with the file system, in a remote root with :mod:`hest_spatialdata.remote` (one request for all of a sample's
names on the hub).
"""

from __future__ import annotations

from pathlib import Path

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.layout import PARTS, SAMPLE_PARTS, SampleFiles, sample_ids_in
from hest_spatialdata.remote import RemoteRoot, is_remote, open_root, remote_sample_files


def sample_files(hest_dir: str | Path | RemoteRoot, sample_id: str) -> SampleFiles:
    """Locate the files of one sample.

    Parameters
    ----------
    hest_dir
        A HEST root (the folder holding ``wsis/``, ``st/``, ``metadata/``, ...), or a remote one
        (``hf://datasets/MahmoodLab/hest[@revision]``, another fsspec URL: see :mod:`hest_spatialdata.remote`).
    sample_id
        The sample id, e.g. ``TENX95``.

    Returns
    -------
    The paths found.

    Raises
    ------
    HestInputError
        If the root does not exist or no file of the sample is found in it.
    """
    if is_remote(hest_dir):
        return remote_sample_files(hest_dir, sample_id)  # type: ignore[arg-type]
    root = Path(hest_dir)  # type: ignore[arg-type]
    if not root.is_dir():
        raise HestInputError(sample_id, root, "HEST directory not found")
    found = {}
    for part, spec in PARTS.items():
        path = next((p for p in spec.paths(root, sample_id) if p.is_file()), None)
        if path is not None:
            found[part] = path
    if not any(part in found for part in SAMPLE_PARTS):
        known = list_sample_ids(root)
        hint = f"; samples here: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}" if known else ""
        raise HestInputError(sample_id, root, f"unknown sample id: no file of it in this HEST directory{hint}")
    return SampleFiles(root=root, sample_id=sample_id, paths=found)


def list_sample_ids(hest_dir: str | Path | RemoteRoot) -> list[str]:
    """Sample ids present in a HEST root (having a slide, an st h5ad or a metadata JSON), sorted naturally."""
    folders = [PARTS[part].folder for part in SAMPLE_PARTS]
    if is_remote(hest_dir):
        root = open_root(hest_dir)  # type: ignore[arg-type]
        return sample_ids_in({folder: list(root.listing(folder)) for folder in folders})
    local = Path(hest_dir)  # type: ignore[arg-type]
    return sample_ids_in({folder: [p.name for p in (local / folder).glob("*") if p.is_file()] for folder in folders})
