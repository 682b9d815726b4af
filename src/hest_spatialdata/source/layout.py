"""The registry of the HEST-1k layout: every source part of a sample, where it lives and what reads it.

This module is the one place that names HEST files (``docs/hest_format.md`` describes them). Each entry of
:data:`PARTS` says, for one source part of a sample: its folder in a HEST root (the same on the hub), its file
names (preferred first: the newest HEST name, then older ones), the hub globs that select every file of the part,
whether a sample needs it, the reader module (in :mod:`hest_spatialdata.readers`) and the element(s) it yields.

Hub downloads, ``--elements`` selection, the batch's source sizes, the napari readers and browser, the example
generator and validation all derive from it. To support a renamed file, add its name to the entry; to support a
new part, add an entry and a reader module with the common contract (see :mod:`hest_spatialdata.readers`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path

from hest_spatialdata._constants import Elements

ID = "{id}"


class Part(StrEnum):
    """Source parts of a HEST sample (the keys of :data:`PARTS`)."""

    METADATA = "metadata"
    WSI = "wsi"
    ST = "st"
    PATCHES = "patches"
    CELLVIT = "cellvit"
    TISSUE = "tissue"
    XENIUM_CELLS = "xenium_cells"
    XENIUM_NUCLEI = "xenium_nuclei"
    TRANSCRIPTS = "transcripts"
    THUMBNAIL = "thumbnail"
    SPATIAL_PLOT = "spatial_plot"
    PIXEL_SIZE_VIS = "pixel_size_vis"
    PATCHES_VIS = "patches_vis"


@dataclass(frozen=True)
class PartSpec:
    """Where one source part of a sample lives, and what the converter makes of it.

    Parameters
    ----------
    folder
        Folder in a HEST root and on the hub (``wsis``, ``cellvit_seg``, ...).
    names
        File names in ``folder`` with ``{id}`` for the sample id, preferred first.
    hub_globs
        Glob patterns (relative to ``folder``) selecting every hub file of the part (``download --parts``).
    required
        Whether a sample cannot be converted without it when one of its elements is wanted (``metadata`` always).
    reader
        Module of :mod:`hest_spatialdata.readers` whose ``read()`` turns the file into elements; ``None`` for parts
        the converter does not read (previews).
    elements
        The elements the reader yields.
    joins
        Other parts some element needs as well, by element (the Xenium cell table needs the cell boundaries).
    ranged
        Whether its reader reads a remote file by byte ranges (large parts); other parts of a remote root are copied
        locally (through the hub cache) before they are read.
    """

    folder: str
    names: tuple[str, ...]
    hub_globs: tuple[str, ...] = ()
    required: bool = False
    reader: str | None = None
    elements: tuple[Elements, ...] = ()
    joins: Mapping[Elements, tuple[Part, ...]] = field(default_factory=dict)
    ranged: bool = False

    def relative_paths(self, sample_id: str) -> tuple[str, ...]:
        """Every path (relative to a HEST root) the part of ``sample_id`` may have, preferred first."""
        return tuple(f"{self.folder}/{name.replace(ID, sample_id)}" for name in self.names)

    def paths(self, root: str | Path, sample_id: str) -> tuple[Path, ...]:
        """Every path the part of ``sample_id`` may have in ``root``, preferred first."""
        return tuple(Path(root) / rel for rel in self.relative_paths(sample_id))

    def path(self, root: str | Path, sample_id: str, name: int = 0) -> Path:
        """The path of file name number ``name`` (0: the preferred one), e.g. to write a sample."""
        return Path(root) / self.relative_paths(sample_id)[name]

    def hub_patterns(self, sample_id: str) -> tuple[str, ...]:
        """Glob patterns of every hub file of the part of ``sample_id``."""
        globs = self.hub_globs or self.names
        return tuple(f"{self.folder}/{glob.replace(ID, sample_id)}" for glob in globs)

    def sample_id_of(self, relative_path: str) -> str | None:
        """The sample id if ``relative_path`` (``folder/name``) is one of this part's file names, else ``None``."""
        folder, _, name = relative_path.rpartition("/")
        if folder.rsplit("/", 1)[-1] != self.folder:
            return None
        for template in self.names:
            prefix, _, suffix = template.partition(ID)
            if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
                return name[len(prefix) : len(name) - len(suffix)]
        return None


PARTS: dict[Part, PartSpec] = {
    Part.METADATA: PartSpec("metadata", ("{id}.json",), required=True),
    Part.WSI: PartSpec(
        "wsis", ("{id}.tif", "{id}.tiff"), required=True, reader="wsi", elements=(Elements.HE,), ranged=True
    ),
    Part.ST: PartSpec("st", ("{id}.h5ad",), required=True, reader="spots", elements=(Elements.SPOTS, Elements.TABLE)),
    Part.PATCHES: PartSpec("patches", ("{id}.h5",), reader="patches", elements=(Elements.PATCHES,), ranged=True),
    Part.CELLVIT: PartSpec(
        "cellvit_seg",
        # parquet (2025), zipped and plain GeoJSON, the June 2024 zip
        (
            "{id}_cellvit_seg.parquet",
            "{id}_cellvit_seg.geojson.zip",
            "{id}_cellvit_seg.geojson",
            "{id}_cellvit_seg.zip",
        ),
        hub_globs=("{id}_cellvit_seg.*",),
        reader="cellvit",
        elements=(Elements.NUCLEI, Elements.NUCLEI_LABELS),
    ),
    Part.TISSUE: PartSpec(
        "tissue_seg", ("{id}_contours.geojson",), hub_globs=("{id}_*",), reader="tissue", elements=(Elements.TISSUE,)
    ),
    Part.XENIUM_CELLS: PartSpec(
        "xenium_seg",
        ("{id}_xenium_cell_seg.parquet", "{id}_xenium_cell_seg.geojson.zip"),
        hub_globs=("{id}_xenium_cell_seg*",),
        reader="xenium_seg",
        elements=(Elements.XENIUM_CELLS,),
    ),
    Part.XENIUM_NUCLEI: PartSpec(
        "xenium_seg",
        ("{id}_xenium_nucleus_seg.parquet", "{id}_xenium_nucleus_seg.geojson.zip"),
        hub_globs=("{id}_xenium_nucleus_seg*",),
        reader="xenium_seg",
        elements=(Elements.XENIUM_NUCLEI,),
    ),
    Part.TRANSCRIPTS: PartSpec(
        "transcripts",
        ("{id}_transcripts.parquet",),
        reader="transcripts",
        elements=(Elements.TRANSCRIPTS, Elements.XENIUM_CELL_TABLE),
        joins={Elements.XENIUM_CELL_TABLE: (Part.XENIUM_CELLS,)},
        ranged=True,
    ),
    Part.THUMBNAIL: PartSpec("thumbnails", ("{id}_downscaled_fullres.jpeg",), hub_globs=("{id}_*",)),
    Part.SPATIAL_PLOT: PartSpec("spatial_plots", ("{id}_spatial_plots.png",), hub_globs=("{id}_*",)),
    Part.PIXEL_SIZE_VIS: PartSpec("pixel_size_vis", ("{id}_pixel_size_vis.png",), hub_globs=("{id}_*",)),
    Part.PATCHES_VIS: PartSpec("patches_vis", ("{id}.png", "{id}_patch_vis.jpg"), hub_globs=("{id}.*", "{id}_*")),
}

#: Parts that identify a sample in a HEST root (a sample has at least one of them).
SAMPLE_PARTS = (Part.WSI, Part.ST, Part.METADATA)
#: Hub folders (``download --parts``), each with the parts stored in it.
HUB_FOLDERS: dict[str, tuple[Part, ...]] = {}
for _part, _spec in PARTS.items():
    HUB_FOLDERS.setdefault(_spec.folder, ())
    HUB_FOLDERS[_spec.folder] += (_part,)


def element_parts(elements: Iterable[str]) -> set[Part]:
    """The parts needed to make ``elements`` (metadata always): their own part and the parts they join."""
    wanted = {Elements(e) for e in elements}
    needed = {Part.METADATA}
    for part, spec in PARTS.items():
        for element in wanted & set(spec.elements):
            needed |= {part, *spec.joins.get(element, ())}
    return needed


def readable_parts() -> Iterator[tuple[Part, PartSpec]]:
    """The parts the converter reads, in reading order (a joined part comes before the part joining it)."""
    return ((part, spec) for part, spec in PARTS.items() if spec.reader is not None)


def candidate_files(sample_id: str) -> dict[Part, list[str]]:
    """Every relative path the registry allows for each part of ``sample_id``, preferred first."""
    return {part: spec.relative_paths(sample_id) for part, spec in PARTS.items()}


def sample_ids_in(names_by_folder: Mapping[str, Iterable[str]]) -> list[str]:
    """The sample ids of the files named in each folder of :data:`SAMPLE_PARTS`, sorted naturally."""
    ids: set[str] = set()
    for part in SAMPLE_PARTS:
        spec = PARTS[part]
        for name in names_by_folder.get(spec.folder, ()):
            if not name.startswith("."):
                sample_id = spec.sample_id_of(f"{spec.folder}/{name}")
                if sample_id is not None:
                    ids.add(sample_id)
    return sorted(ids, key=natural_key)


def identify(relative_path: str) -> tuple[Part, str] | None:
    """Which part of which sample a path (``.../folder/name``) is, or ``None``."""
    for part, spec in PARTS.items():
        sample_id = spec.sample_id_of(relative_path)
        if sample_id is not None:
            return part, sample_id
    return None


def hub_patterns(sample_id: str, folders: Iterable[str]) -> list[str]:
    """Glob patterns of the hub files of ``sample_id`` in each hub folder (``download --parts``)."""
    folders = list(folders)
    unknown = sorted(set(folders) - set(HUB_FOLDERS))
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(HUB_FOLDERS)}")
    return [p for folder in folders for part in HUB_FOLDERS[folder] for p in PARTS[part].hub_patterns(sample_id)]


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Whether a hub path matches one of the glob patterns."""
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def natural_key(sample_id: str) -> tuple[str, int, str]:
    """Sort key putting ``TENX9`` before ``TENX10``."""
    prefix = sample_id.rstrip("0123456789")
    digits = sample_id[len(prefix) :]
    return (prefix, int(digits) if digits else -1, sample_id)


class PatchesKeys:
    """Dataset and attribute names inside ``patches/{id}.h5``; where HEST renamed one, every name, newest first."""

    IMAGES = "img"
    COORDS = "coords"
    BARCODES = ("barcodes", "barcode")
    #: Attributes giving the footprint, looked up on ``img`` then ``coords``.
    PATCH_SIZE = "patch_size"
    FACTOR = "factor"


def _ids(prefix: str, first: int, last: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}" for n in range(first, last + 1))


#: HEST-Benchmark's tasks: task -> its sample ids (HEST-1k ids; the ``--bench-task`` filter and ``docs/benchmark.md``).
BENCH_TASKS: dict[str, tuple[str, ...]] = {
    "IDC": ("TENX95", "TENX99", "NCBI783", "NCBI785"),
    "PRAD": _ids("MEND", 139, 162),
    "PAAD": ("TENX116", "TENX126", "TENX140"),
    "SKCM": ("TENX115", "TENX117"),
    "COAD": ("TENX111", "TENX147", "TENX148", "TENX149"),
    "READ": ("ZEN36", "ZEN40", "ZEN48", "ZEN49"),
    "ccRCC": _ids("INT", 1, 24),
    "LUAD": ("TENX118", "TENX141"),
    "LYMPH_IDC": _ids("NCBI", 681, 684),
}
