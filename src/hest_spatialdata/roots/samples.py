"""Finding samples and their files in a HEST root, local or remote.

The registry (:mod:`hest_spatialdata.source.layout`) says which names to look for; this module looks: in a local folder
with the file system, in a remote root with :mod:`hest_spatialdata.roots.remote` (one request for all of a sample's
names on the hub).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hest_spatialdata.errors import HestInputError
from hest_spatialdata.roots.remote import RemoteFile, RemoteRoot, is_remote, open_root
from hest_spatialdata.source.layout import PARTS, SAMPLE_PARTS, Part, candidate_files, sample_ids_in


@dataclass(frozen=True)
class SampleFiles:
    """The files of one sample found in a HEST root.

    Parameters
    ----------
    root
        The HEST root: a local folder, or a remote root (:class:`hest_spatialdata.roots.remote.RemoteRoot`).
    sample_id
        The sample id.
    paths
        The path of each part present (the first of its names that exists): :class:`~pathlib.Path` in a local
        root, :class:`hest_spatialdata.roots.remote.RemoteFile` in a remote one.
    """

    root: Path | RemoteRoot
    sample_id: str
    paths: dict[Part, Path | RemoteFile] = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        """Whether the root is remote (its files are :class:`~hest_spatialdata.roots.remote.RemoteFile`)."""
        return not isinstance(self.root, Path)

    def relative(self, part: Part | str) -> str:
        """The path of ``part``'s file relative to the root (``wsis/TENX95.tif``)."""
        path = self.paths[Part(part)]
        return path.relative_path if self.remote else path.relative_to(self.root).as_posix()

    def size(self, part: Part | str) -> int:
        """The size in bytes of ``part``'s file."""
        path = self.paths[Part(part)]
        return path.size if self.remote else path.stat().st_size

    def get(self, part: Part | str) -> Path | None:
        """The file of ``part``, or ``None`` where the sample has none."""
        return self.paths.get(Part(part))

    def require(self, part: Part | str) -> Path:
        """The file of ``part``; raise naming the expected file where it is absent."""
        path = self.get(part)
        if path is None and self.remote:
            rel = PARTS[Part(part)].relative_paths(self.sample_id)[0]
            raise HestInputError(self.sample_id, f"{self.root}/{rel}", f"required file missing ({rel})")
        if path is None:
            expected = PARTS[Part(part)].path(self.root, self.sample_id)
            rel = expected.relative_to(self.root).as_posix()
            raise HestInputError(self.sample_id, expected, f"required file missing ({rel})")
        return path

    def present(self) -> dict[str, Path]:
        """Parts that exist on disk, by part name, in registry order."""
        return {part.value: path for part, path in self.paths.items()}


def sample_files(hest_dir: str | Path | RemoteRoot, sample_id: str) -> SampleFiles:
    """Locate the files of one sample.

    Parameters
    ----------
    hest_dir
        A HEST root (the folder holding ``wsis/``, ``st/``, ``metadata/``, ...), or a remote one
        (``hf://datasets/MahmoodLab/hest[@revision]``, another fsspec URL: see :mod:`hest_spatialdata.roots.remote`).
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


def remote_sample_files(hest_dir: str | RemoteRoot, sample_id: str) -> SampleFiles:
    """The files of one sample in a remote root: every name the registry allows looked up at once.

    Raises
    ------
    HestInputError
        If the root does not exist or holds no file of the sample.
    """
    try:
        root = open_root(hest_dir)
    except FileNotFoundError as e:
        raise HestInputError(sample_id, str(hest_dir), f"HEST root not found ({e})") from e
    candidates = candidate_files(sample_id)
    sizes = root.find(rel for rels in candidates.values() for rel in rels)
    found: dict[Part, Path | RemoteFile] = {}
    for part, rels in candidates.items():
        rel = next((r for r in rels if r in sizes), None)
        if rel is not None:
            found[part] = root.file(rel, sizes[rel])
    if not any(part in found for part in SAMPLE_PARTS):
        raise HestInputError(sample_id, root.url, "unknown sample id: no file of it in this HEST root")
    return SampleFiles(root=root, sample_id=sample_id, paths=found)


def list_sample_ids(hest_dir: str | Path | RemoteRoot) -> list[str]:
    """Sample ids present in a HEST root (having a slide, an st h5ad or a metadata JSON), sorted naturally."""
    folders = [PARTS[part].folder for part in SAMPLE_PARTS]
    if is_remote(hest_dir):
        root = open_root(hest_dir)  # type: ignore[arg-type]
        return sample_ids_in({folder: list(root.listing(folder)) for folder in folders})
    local = Path(hest_dir)  # type: ignore[arg-type]
    return sample_ids_in({folder: [p.name for p in (local / folder).glob("*") if p.is_file()] for folder in folders})
