"""What every imported 10x run shares: the request, the run a technology module reads, and the store's source.

:class:`TenxSource` is a :class:`hest_spatialdata.storage.store.StoreSource`: the store is written by the same
atomic writer as a converted HEST sample (:func:`hest_spatialdata.storage.store.write_store`), its ``he`` by the
same image writer (the H&E's levels, :mod:`hest_spatialdata.tenx._image`), every other element built with the same
functions as the HEST readers (spots and table: :mod:`hest_spatialdata.readers.spots`; nuclei:
:mod:`~hest_spatialdata.readers.cellvit` and :mod:`~hest_spatialdata.readers.nuclei_labels`), so an imported store
is in exactly the contract of a converted one.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata._constants import ATTRS_KEY, Elements, Technology
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.readers._context import DEFAULT_CHUNK_SIZE, SampleContext
from hest_spatialdata.source.metadata import nan_to_none
from hest_spatialdata.tenx import _files as files
from hest_spatialdata.tenx._run import ImportRequest, TenxRun

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from hest_spatialdata.writer.image import Level

#: The module reading each technology (the contract in :mod:`hest_spatialdata.tenx`).
TECHNOLOGY_MODULES = {
    Technology.VISIUM: "hest_spatialdata.tenx.visium",
    Technology.VISIUM_HD: "hest_spatialdata.tenx.visium_hd",
    Technology.XENIUM: "hest_spatialdata.tenx.xenium",
}
#: Metadata keys the importer computes; a user's ``--metadata`` may not replace them.
COMPUTED_KEYS = (
    "id",
    "st_technology",
    "pixel_size_um_estimated",
    "fullres_px_width",
    "fullres_px_height",
    "spots_under_tissue",
    "spot_diameter",
    "inter_spot_dist",
)
#: The element names an import writes besides a technology's own (``TenxRun.extra_names``).
COMMON_ELEMENTS = (
    Elements.HE,
    Elements.SPOTS,
    Elements.TABLE,
    Elements.TISSUE,
    Elements.PATCHES,
    Elements.NUCLEI,
    Elements.NUCLEI_LABELS,
)


def technology_module(technology: Technology) -> Any:
    """The module reading ``technology`` (:data:`TECHNOLOGY_MODULES`)."""
    return importlib.import_module(TECHNOLOGY_MODULES[technology])


def find_image(folder: Path, sample_id: str) -> Path:
    """The full-resolution H&E next to the outputs when none is given: the largest TIFF/SVS there or one above.

    HEST's readers take the biggest image of the folder (``find_biggest_img``); Space Ranger's own PNGs are never
    full resolution and are not considered.

    Raises
    ------
    HestInputError
        If there is none (the message asks for ``--image``).
    """
    candidates = [
        p for where in (folder, folder.parent) for p in where.glob("*") if p.is_file() and _is_image_name(p.name)
    ]
    if not candidates:
        raise HestInputError(
            sample_id,
            folder,
            "no full-resolution H&E image (TIFF, OME-TIFF or SVS) found next to the 10x outputs; pass --image",
        )
    return max(candidates, key=lambda p: p.stat().st_size)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(files.IMAGE_SUFFIXES)


def parse_metadata_items(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict; a value that is a JSON number, boolean, null or string is kept as one.

    Raises
    ------
    ValueError
        For an item without ``=`` or with an empty key.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"metadata must be KEY=VALUE, got {item!r}")
        parsed[key.strip()] = _scalar(value)
    return parsed


#: Columns of a sample sheet (``import --sheet``) that are not metadata; ``path`` and ``id`` are required.
SHEET_FILE_COLUMNS = ("path", "image", "alignment", "nuclei")


def read_sheet(path: str | Path) -> dict[str, dict[str, Any]]:
    """A sample sheet: one 10x run a row, ``id -> import_10x`` keyword arguments.

    Columns: ``id`` and ``path`` (required), ``image``, ``alignment``, ``nuclei`` (files; relative to the sheet's
    folder), and any other column as metadata (``organ``, ``species``, ``patient`` ...; an empty cell is no value).

    Raises
    ------
    HestInputError
        For a missing or unreadable sheet, a missing column, an empty or repeated id.
    """
    import pandas as pd

    path = Path(path)
    try:
        rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise HestInputError(None, path, f"sample sheet unreadable ({type(e).__name__}: {e})") from e
    missing = [c for c in ("id", "path") if c not in rows.columns]
    if missing:
        raise HestInputError(None, path, f"sample sheet needs the columns id and path (missing: {', '.join(missing)})")
    ids = rows["id"].str.strip()
    if (ids == "").any() or ids.duplicated().any():
        raise HestInputError(None, path, "sample sheet ids must be given and unique")
    runs = {}
    for sample_id, row in zip(ids, rows.to_dict("records"), strict=True):
        run: dict[str, Any] = {k: str(path.parent / row[k]) for k in SHEET_FILE_COLUMNS if row.get(k, "").strip()}
        extra = {k: _scalar(v) for k, v in row.items() if k not in (*SHEET_FILE_COLUMNS, "id") and v.strip()}
        runs[sample_id] = run | {"metadata": extra}
    return runs


def _scalar(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool | str) or value is None else text  # "a b" unquoted


class TenxSource:
    """An imported 10x run as a :class:`hest_spatialdata.storage.store.StoreSource`.

    :meth:`check` reads the run (counts, positions: small) and the H&E's header, and checks that they fit, before
    anything is written; the elements are built lazily by :meth:`read` (:mod:`hest_spatialdata.tenx._elements`).
    """

    def __init__(self, request: ImportRequest, technology: Technology) -> None:
        self.request = request
        self.sample_id = request.sample_id
        self.technology = technology
        self._checked: tuple[TenxRun, list[Level], SampleContext] | None = None

    def check(self, elements: list[str] | None) -> None:
        """Read the run and the H&E header; raise :class:`HestInputError` if they do not fit."""
        self.checked()

    def checked(self) -> tuple[TenxRun, list[Level], SampleContext]:
        """The run, the H&E levels and the sample's context (read once)."""
        if self._checked is None:
            from hest_spatialdata.readers._checks import check_on_slide
            from hest_spatialdata.tenx._image import image_levels

            for what, given in (("alignment", self.request.alignment), ("nuclei", self.request.nuclei)):
                if given is not None and not given.is_file():
                    raise HestInputError(self.sample_id, given, f"{what} file not found")
            levels = image_levels(self.request.image, self.sample_id)
            try:
                module = technology_module(self.technology)
            except ModuleNotFoundError:
                problem = f"importing {self.technology.value} runs is not supported by this version"
                raise HestInputError(self.sample_id, self.request.folder, problem) from None
            run = module.read_run(self.request, levels[0].shape[:2])
            ctx = SampleContext(
                sample_id=self.sample_id,
                pixel_size_um=run.pixel_size_um,
                technology=run.technology,
                slide_shape=tuple(levels[0].shape[:2]),
                metadata=self._metadata(run, levels[0].shape[:2]),
            )
            where = f"of the H&E {self.request.image.name}"
            check_on_slide(run.centres, ctx, run.positions_file, what=f"spot centres (in level-0 px {where})")
            self._checked = (run, levels, ctx)
        return self._checked

    def slide(self) -> tuple[list[Level], bool]:
        """The H&E's levels (read locally)."""
        return self.checked()[1], False

    def read(self, elements: list[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> SpatialData:
        """Every wanted element but ``he``, with ``attrs["hest"]``."""
        from hest_spatialdata.readers.sample import element_names
        from hest_spatialdata.tenx._elements import build_elements

        run, levels, ctx = self.checked()
        ctx = SampleContext(**{**ctx.__dict__, "chunk_size": chunk_size, "shared": {}})
        sdata = build_elements(run, levels, ctx, self.request, frozenset(elements))
        sdata.attrs[ATTRS_KEY] = self.attrs() | {"elements": element_names(sdata)}
        if "spots" in ctx.shared and Elements.SPOTS.value in sdata.shapes:
            sdata.attrs[ATTRS_KEY]["spots"] = ctx.shared["spots"]
        if Elements.NUCLEI_LABELS.value in sdata.labels:
            from hest_spatialdata.readers.nuclei_labels import LABEL_ID_RULE

            sdata.attrs[ATTRS_KEY]["nuclei_labels"] = LABEL_ID_RULE
        return sdata

    def attrs(self) -> dict[str, Any]:
        """``attrs["hest"]`` as a converted store's (:func:`~hest_spatialdata.readers.sample.source_attrs`) has it."""
        from hest_spatialdata.readers.sample import store_attrs_of

        run, _, ctx = self.checked()
        sources = dict(run.source_files) | {"image": self.request.image}
        if self.request.nuclei is not None:
            sources["nuclei"] = self.request.nuclei
        files = {role: {"name": str(path), "size": _size(path)} for role, path in sources.items()}
        imported = {"imported": imported_attrs(self.request, ctx.technology), "elements": {}}
        return store_attrs_of(ctx, files) | imported

    def _metadata(self, run: TenxRun, slide_shape: tuple[int, int]) -> dict[str, Any]:
        computed = {
            "id": self.sample_id,
            "st_technology": run.technology.value,
            "pixel_size_um_estimated": run.pixel_size_um,
            "fullres_px_width": int(slide_shape[1]),
            "fullres_px_height": int(slide_shape[0]),
            "spots_under_tissue": int(run.table.n_obs),
        }
        clash = sorted(set(self.request.metadata) & set(COMPUTED_KEYS))
        if clash:
            raise HestInputError(
                self.sample_id, self.request.path, f"--metadata may not set {', '.join(clash)}: computed from the run"
            )
        return nan_to_none(dict(run.metadata) | computed | dict(self.request.metadata))


def imported_attrs(request: ImportRequest, technology: Technology) -> dict[str, Any]:
    """``attrs["hest"]["imported"]``: the 10x folder and the H&E the store was imported from, and the reader."""
    from importlib.metadata import version

    return {
        "from": "10x",
        "technology": technology.value,
        "folder": str(request.folder.resolve()),
        "image": str(request.image.resolve()),
        "alignment": None if request.alignment is None else str(request.alignment.resolve()),
        "nuclei": None if request.nuclei is None else str(request.nuclei.resolve()),
        "reader": f"spatialdata-io {version('spatialdata-io')}",
    }


def _size(path: Path) -> int:
    """Bytes of a file, or of the files in a folder (a MatrixMarket counts folder)."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0
