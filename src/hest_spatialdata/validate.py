"""``validate()``: check a store against the output contract and, given its HEST source, against the source itself.

Structure: the store reads with ``spatialdata.read_zarr``, carries ``attrs["hest"]``, holds every element listed
there, and every element has the ``global`` (identity) and ``microns`` (``Scale(pixel_size)``) coordinate systems.

Fidelity (with the HEST folder): the same elements as :func:`hest_spatialdata.readers.sample.read_hest` makes from the
source; every image level equal to the TIFF's level, compared chunk by chunk (lazily: memory stays flat whatever the
slide size); spot centres equal to ``obsm['spatial']`` and radii to the reader's; tables equal (``X``, obs and var
names); metadata equal to the JSON; for the other shapes, points and tables, counts, indices and geometries.

Elements added after conversion (listed in ``attrs["hest"]["added"]``, e.g. by ``embed``) are checked for structure
only (coordinate systems; a table annotates a shapes element of the store, one row per shape) and are not expected
in the source.

Importing this module is cheap; spatialdata is imported when a store is validated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata._constants import ADDED_KEY, METADATA_UNS_KEY, CoordinateSystems
from hest_spatialdata.storage.locations import locate

if TYPE_CHECKING:
    import anndata as ad
    import dask.array as da
    import geopandas as gpd
    from rich.table import Table
    from spatialdata import SpatialData
    from upath import UPath

#: Largest coordinate difference (level-0 px) accepted between the store's spot centres and ``obsm['spatial']``.
CENTRE_TOLERANCE_PX = 1e-6
_KINDS = ("images", "labels", "shapes", "points", "tables")


@dataclass(frozen=True)
class Check:
    """One check of a validation.

    Parameters
    ----------
    name
        What was checked.
    ok
        Whether it passed.
    detail
        What was found (why it failed).
    """

    name: str
    ok: bool
    detail: str = ""


@dataclass
class ValidationReport:
    """The checks made on one store.

    Parameters
    ----------
    store
        The store validated.
    against
        The HEST folder it was compared with, if any.
    sample_id
        The sample id from the store's attrs.
    checks
        Every check, in order.
    """

    store: Path | UPath
    against: Path | None = None
    sample_id: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every check passed (and there was at least one)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record a check; return whether it passed."""
        self.checks.append(Check(name, bool(ok), detail))
        return bool(ok)

    def to_dict(self) -> dict[str, Any]:
        """Summarise as JSON-ready data."""
        return {
            "store": str(self.store),
            "against": None if self.against is None else str(self.against),
            "sample_id": self.sample_id,
            "ok": self.ok,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }

    def table(self) -> Table:
        """Tabulate the checks with rich."""
        from rich.table import Table

        verdict = "[green]valid[/]" if self.ok else f"[red]INVALID[/] ({len(self.failures)} failed)"
        source = f" against {self.against}" if self.against else " (structure only)"
        table = Table(title=f"{self.store}{source}: {verdict}", title_justify="left")
        table.add_column("check")
        table.add_column("", justify="center")
        table.add_column("detail", overflow="fold")
        for c in self.checks:
            table.add_row(c.name, "[green]✓[/]" if c.ok else "[red]✗[/]", c.detail)
        return table

    def __str__(self) -> str:
        lines = [f"{self.store}: {'valid' if self.ok else 'INVALID'}"]
        lines += [f"  {'ok  ' if c.ok else 'FAIL'} {c.name}{': ' + c.detail if c.detail else ''}" for c in self.checks]
        return "\n".join(lines)


def validate(
    store: str | Path | UPath,
    against: str | Path | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> ValidationReport:
    """Validate a store written by hest-spatialdata, optionally against its HEST source.

    Parameters
    ----------
    store
        The ``{id}.zarr`` store: a folder or a URL (``s3://bucket/prefix/ID.zarr``).
    against
        The HEST folder the store was converted from: also check that the store's content equals the source.
    storage_options
        fsspec options of a URL store.

    Returns
    -------
    The report; ``report.ok`` tells whether the store is valid, ``report.failures`` why not.
    """
    from hest_spatialdata.storage.store import store_attrs

    report = ValidationReport(locate(store, storage_options), None if against is None else Path(against))
    hest = store_attrs(report.store)
    if not report.add("attrs['hest']", hest is not None, "" if hest else "missing from zarr.json: not a store of ours"):
        hest = {}
    report.sample_id = hest.get("sample_id")
    if hest.get("elements"):
        report.add("elements on disk", *_elements_on_disk(report.store, hest))
    sdata = _read_store(report)
    if sdata is None:
        return report
    _check_structure(report, sdata, hest)
    if report.against is not None:
        _check_fidelity(report, sdata, hest)
    return report


# --------------------------------------------------------------------------------------------- structure


def _elements_on_disk(store: Path | UPath, hest: dict[str, Any]) -> tuple[bool, str]:
    listed = [(kind, name) for kind, names in hest["elements"].items() for name in names]
    missing = [(kind, name) for kind, name in listed if not (store / kind / name / "zarr.json").is_file()]
    return not missing, f"missing {_names(missing)}" if missing else f"{len(listed)} element folders"


def _read_store(report: ValidationReport) -> SpatialData | None:
    from hest_spatialdata.storage.reader import read_store

    if not report.store.is_dir():
        report.add("readable", False, "no such store")
        return None
    try:
        sdata = read_store(report.store)
    except Exception as e:  # noqa: BLE001 - whatever read_zarr raises, the store is unreadable
        report.add("readable", False, f"spatialdata.read_zarr failed: {type(e).__name__}: {e}")
        return None
    report.add("readable", True, f"spatialdata.read_zarr: {len(_elements(sdata))} elements")
    return sdata


def _check_structure(report: ValidationReport, sdata: SpatialData, hest: dict[str, Any]) -> None:
    listed = {(kind, name) for kind, names in hest.get("elements", {}).items() for name in names}
    present = set(_elements(sdata))
    missing = sorted(listed - present)
    extra = sorted(present - listed)
    detail = f"missing: {_names(missing)}" if missing else f"{len(listed)} listed, all present"
    report.add("elements listed in attrs['hest']", not missing and bool(listed), detail or "none listed")
    added = _added(hest)
    if added:
        lost = sorted(added - present)
        detail = f"missing: {_names(lost)}" if lost else _names(sorted(added))
        report.add(f"elements in attrs['hest']['{ADDED_KEY}']", not lost, detail)
    extra = [e for e in extra if e not in added]
    if extra:
        report.add("elements not listed", True, f"also holds {_names(extra)} (not written by the converter)")
    pixel_size = hest.get("pixel_size_um")
    for kind, name in sorted(present):
        if kind != "tables":
            element = getattr(sdata, kind)[name]
            report.add(f"{kind[:-1]} {name}: coordinate systems", *_coordinate_systems(element, pixel_size))
    for name, table in sdata.tables.items():
        annotates = report.add(f"table {name}: annotates", *_annotation(sdata, table))
        if annotates and ("tables", name) in added:
            report.add(f"table {name}: one row per shape", *_one_row_per_shape(sdata, table))
    _check_metadata_copies(report, sdata, hest)


def _added(hest: dict[str, Any]) -> set[tuple[str, str]]:
    return {(kind, name) for kind, names in (hest.get(ADDED_KEY) or {}).items() for name in names}


def _one_row_per_shape(sdata: SpatialData, table: ad.AnnData) -> tuple[bool, str]:
    from spatialdata.models import get_table_keys

    regions, _, instance_key = get_table_keys(table)
    shapes = sdata.shapes.get(regions if isinstance(regions, str) else next(iter(regions), ""))
    if shapes is None:
        return False, f"annotates {regions!r}, not a shapes element of the store"
    same = sorted(table.obs[instance_key].astype(str)) == sorted(shapes.index.astype(str))
    return same, f"{table.n_obs} rows, {len(shapes)} shapes" + ("" if same else ": not the same ids")


def _coordinate_systems(element: Any, pixel_size: float | None) -> tuple[bool, str]:
    import numpy as np
    from spatialdata.transformations import get_transformation

    transforms = get_transformation(element, get_all=True)
    wanted = {CoordinateSystems.GLOBAL.value: 1.0, CoordinateSystems.MICRONS.value: pixel_size}
    problems = []
    for system, scale in wanted.items():
        if system not in transforms:
            problems.append(f"no '{system}'")
            continue
        matrix = transforms[system].to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
        if scale is None or not np.allclose(matrix, np.diag([scale, scale, 1.0]), rtol=1e-9, atol=0):
            problems.append(f"'{system}' is {matrix[:2].round(6).tolist()}, expected Scale({scale}, {scale})")
    if problems:
        return False, "; ".join(problems)
    return True, f"global = identity, microns = Scale({pixel_size})"


def _annotation(sdata: SpatialData, table: ad.AnnData) -> tuple[bool, str]:
    from spatialdata.models import get_table_keys

    try:
        regions, region_key, instance_key = get_table_keys(table)
    except (KeyError, ValueError, TypeError) as e:
        return False, f"no spatialdata_attrs: {e}"
    regions = [regions] if isinstance(regions, str) else list(regions)
    for region in regions:
        if region not in sdata.shapes and region not in sdata.points and region not in sdata.labels:
            return False, f"annotates '{region}', which is not in the store"
    if len(regions) == 1 and regions[0] in sdata.shapes:
        shapes = sdata.shapes[regions[0]]
        ids = table.obs[instance_key].astype(str)
        unknown = ~ids.isin(shapes.index.astype(str))
        if unknown.any():
            return (
                False,
                f"{unknown.sum()} rows of '{instance_key}' are not in {regions[0]}, e.g. {ids[unknown].iloc[0]!r}",
            )
    return True, f"{', '.join(regions)} ({region_key} / {instance_key})"


def _check_metadata_copies(report: ValidationReport, sdata: SpatialData, hest: dict[str, Any]) -> None:
    for name, table in sdata.tables.items():
        if METADATA_UNS_KEY in table.uns and hest.get("metadata") is not None:
            same = json.loads(str(table.uns[METADATA_UNS_KEY])) == hest["metadata"]
            report.add(f"table {name}: uns['{METADATA_UNS_KEY}']", same, "" if same else "differs from attrs['hest']")


# --------------------------------------------------------------------------------------------- fidelity


def _check_fidelity(report: ValidationReport, sdata: SpatialData, hest: dict[str, Any]) -> None:
    if not report.sample_id:
        report.add("source", False, "no sample_id in attrs['hest']: cannot find the source")
        return
    if report.against is not None and is_tenx_folder(report.against):
        _check_import_fidelity(report, sdata, hest)
        return
    from hest_spatialdata.readers.sample import read_hest
    from hest_spatialdata.roots.samples import sample_files
    from hest_spatialdata.source.layout import Part

    found = _read_source(
        report, lambda: (read_hest(report.against, report.sample_id), sample_files(report.against, report.sample_id))
    )
    if found is None:
        return
    source, files = found
    report.add("source", True, f"{report.sample_id} in {report.against}")
    _compare_elements(report, sdata, source, hest)
    st, metadata = files.get(Part.ST), files.get(Part.METADATA)
    if st is not None and "spots" in sdata.shapes:
        report.add("spots: centres = obsm['spatial']", *_centres_match(sdata.shapes["spots"], st))
    if metadata is not None:
        from hest_spatialdata.source.metadata import read_metadata

        same = hest.get("metadata") == read_metadata(metadata, report.sample_id)
        name = metadata.relative_to(files.root).as_posix()
        report.add(f"metadata = {name}", same, "" if same else "attrs['hest']['metadata'] differs from the JSON")


def _read_source(report: ValidationReport, read: Callable[[], Any]) -> Any:
    """``read()``, or ``None`` with a failed ``source`` check saying why (bad input, or any reader's error)."""
    from hest_spatialdata.errors import HestInputError

    try:
        return read()
    except (HestInputError, ValueError) as e:
        report.add("source", False, str(e))
    except Exception as e:  # noqa: BLE001 - a source no reader can read is a failed check, not a crash
        report.add("source", False, f"unreadable: {type(e).__name__}: {e}")
    return None


def _compare_elements(
    report: ValidationReport,
    sdata: SpatialData,
    source: SpatialData,
    hest: dict[str, Any],
    beside: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """The store's elements against those made from the source: the same ones, each equal.

    ``beside``: elements expected but compared apart (an imported store's ``he`` with the H&E's levels).
    """
    expected, present = set(_elements(source)) | beside, set(_elements(sdata)) - _added(hest)
    missing, extra = sorted(expected - present), sorted(present - expected)
    problems = [f"missing {_names(missing)}"] * bool(missing) + [f"not in the source {_names(extra)}"] * bool(extra)
    report.add("elements match the source", not problems, "; ".join(problems) or _names(sorted(expected)))
    for kind, name in sorted((expected & present) - beside):
        compare = _COMPARE[kind]
        for check, ok, detail in compare(getattr(sdata, kind)[name], getattr(source, kind)[name]):
            report.add(f"{kind[:-1]} {name}: {check}", ok, detail)


def is_tenx_folder(path: str | Path) -> bool:
    """Whether ``path`` is a 10x output folder (Space Ranger, Xenium) rather than a HEST root."""
    from hest_spatialdata.errors import HestInputError
    from hest_spatialdata.tenx._detect import find_outputs

    path = Path(path)
    if (path / "metadata").is_dir():
        return False
    try:
        find_outputs(path)
    except HestInputError:
        return False
    return True


def _check_import_fidelity(report: ValidationReport, sdata: SpatialData, hest: dict[str, Any]) -> None:
    """An imported store against its 10x folder: counts, spot centres, pixels, and the derived elements.

    The run is read again from the folder (with the H&E recorded in ``attrs["hest"]["imported"]``); the counts are
    compared with the counts file, the centres with the positions file, each ``he`` level with the H&E's level.
    """
    from hest_spatialdata.tenx._reimport import reimport

    found = _read_source(report, lambda: reimport(report.against, hest))
    if found is None:
        return
    source, levels, metadata = found
    report.add("source", True, f"{report.sample_id}: 10x output in {report.against}")
    _compare_elements(report, sdata, source, hest, beside=frozenset({("images", "he")}))
    if "he" in sdata.images:
        for check, ok, detail in _compare_images(sdata.images["he"], levels):
            report.add(f"image he: {check} = the H&E's", ok, detail)
    stored = hest.get("metadata") or {}
    differing = sorted(key for key, value in metadata.items() if stored.get(key) != value)
    detail = f"differ: {', '.join(differing)}" if differing else f"{len(metadata)} keys read from the run, all equal"
    report.add("metadata = the run's", not differing, detail)


def _compare_images(stored: Any, source: Any) -> Iterator[tuple[str, bool, str]]:
    stored_levels, source_levels = _levels(stored), _levels(source)
    if len(stored_levels) != len(source_levels):
        yield "levels", False, f"{len(stored_levels)} levels in the store, {len(source_levels)} in the slide"
        return
    for k, (a, b) in enumerate(zip(stored_levels, source_levels, strict=True)):
        yield f"level {k} pixels", *_pixels_equal(a, b)


def _levels(image: Any) -> list[da.Array]:
    if isinstance(image, list):  # the levels themselves (an H&E's)
        return image
    if hasattr(image, "children"):  # multiscale DataTree: scale0, scale1, ...
        return [image[key]["image"].data for key in sorted(image.children, key=lambda k: int(k.removeprefix("scale")))]
    return [image.data]


def _pixels_equal(stored: da.Array, source: da.Array) -> tuple[bool, str]:
    import dask.array as da
    import numpy as np

    if stored.shape != source.shape or stored.dtype != source.dtype:
        return False, f"store {stored.shape} {stored.dtype}, slide {source.shape} {source.dtype}"
    # One boolean per chunk: nothing but a chunk pair is ever in memory, and a difference is located.
    flags = da.map_blocks(
        _block_equal,
        stored,
        source.rechunk(stored.chunks),
        dtype=bool,
        chunks=tuple((1,) * len(c) for c in stored.chunks),
    ).compute()
    bad = np.argwhere(~flags)
    if not len(bad):
        return True, f"{stored.shape} equal, {flags.size} chunks compared"
    where = [_chunk_origin(stored.chunks, index) for index in bad[:3]]
    return False, f"{len(bad)} of {flags.size} chunks differ, first at (c, y, x) = {', '.join(map(str, where))}"


def _block_equal(a: Any, b: Any) -> Any:
    import numpy as np

    return np.full((1,) * a.ndim, np.array_equal(a, b))


def _chunk_origin(chunks: tuple[tuple[int, ...], ...], index: Any) -> tuple[int, ...]:
    return tuple(int(sum(sizes[:i])) for sizes, i in zip(chunks, index, strict=True))


def _compare_shapes(stored: gpd.GeoDataFrame, source: gpd.GeoDataFrame) -> Iterator[tuple[str, bool, str]]:
    import numpy as np
    import shapely

    ok, detail = _same_index(stored.index, source.index)
    yield "rows and index", ok, detail
    if not ok:
        return
    same = shapely.equals_exact(stored.geometry.values, source.geometry.values, tolerance=0)
    yield "geometries", bool(same.all()), _first_difference(~np.asarray(same), stored.index, "geometry")
    if "radius" in source.columns:
        radius = stored["radius"].to_numpy() if "radius" in stored.columns else np.full(len(stored), np.nan)
        equal = np.isclose(radius, source["radius"].to_numpy(), rtol=1e-12, atol=0)
        yield "radii", bool(equal.all()), _first_difference(~equal, stored.index, "radius")


def _compare_points(stored: Any, source: Any) -> Iterator[tuple[str, bool, str]]:
    n_stored, n_source = len(stored), len(source)
    yield "rows", n_stored == n_source, f"{n_stored} in the store, {n_source} in the source"
    missing = sorted(set(source.columns) - set(stored.columns))
    yield "columns", not missing, f"missing {', '.join(missing)}" if missing else ", ".join(map(str, stored.columns))
    if n_stored == n_source and not missing:
        import dask

        sums = dask.compute(*(frame[c].sum() for frame in (stored, source) for c in ("x", "y")))
        # the two frames may be partitioned differently (a partition per row group, or small files fused), and a
        # float sum depends on its order: pairwise sums within partitions then across them differ by a few ulps of
        # the total; 64 ulps (1.4e-14 of it) is under a tenth of a pixel for 100M points on a 50k-px slide
        tolerance = 64 * 2.0**-52
        same = all(math.isclose(a, b, rel_tol=tolerance, abs_tol=0) for a, b in zip(sums[:2], sums[2:], strict=True))
        yield "x, y sums", same, f"store {sums[:2]}, source {sums[2:]}"


def _compare_tables(stored: ad.AnnData, source: ad.AnnData) -> Iterator[tuple[str, bool, str]]:
    yield "obs names", *_same_index(stored.obs_names, source.obs_names)
    yield "var names", *_same_index(stored.var_names, source.var_names)
    if stored.shape == source.shape:
        yield "X", *_matrices_equal(stored.X, source.X)


def _matrices_equal(a: Any, b: Any) -> tuple[bool, str]:
    import numpy as np
    import scipy.sparse as sp

    if a.dtype != b.dtype:
        return False, f"dtype {a.dtype} in the store, {b.dtype} in the source"
    if sp.issparse(a) and sp.issparse(b):
        differing = (sp.csr_matrix(a) != sp.csr_matrix(b)).nnz
    else:
        a, b = (m.toarray() if sp.issparse(m) else np.asarray(m) for m in (a, b))
        differing = int((a != b).sum())
    if differing:
        return False, f"{differing} values differ"
    return True, f"{a.shape} {a.dtype}, every value equal"


_COMPARE: dict[str, Callable[[Any, Any], Iterator[tuple[str, bool, str]]]] = {
    "images": _compare_images,
    "labels": _compare_images,
    "shapes": _compare_shapes,
    "points": _compare_points,
    "tables": _compare_tables,
}


def _centres_match(spots: gpd.GeoDataFrame, st_path: Path) -> tuple[bool, str]:
    import anndata as ad
    import numpy as np

    adata = ad.read_h5ad(st_path, backed="r")
    try:
        expected = np.asarray(adata.obsm["spatial"], dtype=np.float64)
        names = adata.obs_names.astype(str)
    finally:
        adata.file.close()
    if len(spots) != len(expected) or not spots.index.astype(str).equals(names):
        return False, f"{len(spots)} spots in the store, {len(expected)} rows in {st_path.name}"
    geometry = spots.geometry
    centres = geometry.centroid if (geometry.geom_type != "Point").any() else geometry
    found = np.column_stack([centres.x.to_numpy(), centres.y.to_numpy()])
    error = float(np.abs(found - expected).max()) if len(found) else 0.0
    return error <= CENTRE_TOLERANCE_PX, f"largest difference {error:.3g} px over {len(found)} spots"


# --------------------------------------------------------------------------------------------- helpers


def _elements(sdata: SpatialData) -> list[tuple[str, str]]:
    return [(kind, name) for kind in _KINDS for name in getattr(sdata, kind)]


def _names(elements: list[tuple[str, str]]) -> str:
    return ", ".join(f"{kind}/{name}" for kind, name in elements)


def _same_index(stored: Any, source: Any) -> tuple[bool, str]:
    if len(stored) == len(source) and stored.astype(str).equals(source.astype(str)):
        return True, f"{len(stored)} rows, same index"
    dropped = source.difference(stored)
    added = stored.difference(source)
    parts = [f"{len(stored)} rows in the store, {len(source)} in the source"]
    if len(dropped):
        parts.append(f"missing {len(dropped)}, e.g. {dropped[0]!r}")
    if len(added):
        parts.append(f"unknown {len(added)}, e.g. {added[0]!r}")
    if not (len(dropped) or len(added)):
        parts.append("same ids in another order")
    return False, "; ".join(parts)


def _first_difference(mask: Any, index: Any, what: str) -> str:
    import numpy as np

    bad = np.flatnonzero(mask)
    if not len(bad):
        return f"{len(mask)} equal"
    return f"{len(bad)} {what} values differ, e.g. at {index[bad[0]]!r}"
