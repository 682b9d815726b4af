"""``convert()``: the one conversion path, for Python and the CLI alike.

It selects the samples (ids and/or filters, in a local HEST folder or in the hub's catalog), then runs them as a
resumable batch (:func:`hest_spatialdata.conversion.batch.run_batch`): complete stores are skipped, a bad sample is
recorded without stopping the others, and an exception is raised only once every good sample is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata.conversion.batch import BatchSummary, ConvertOptions, HubPlan, SampleResult, run_batch
from hest_spatialdata.errors import HestInputError
from hest_spatialdata.roots.remote import is_remote
from hest_spatialdata.roots.samples import list_sample_ids, sample_files
from hest_spatialdata.source.filters import FILTER_COLUMNS, normalise_filters, record_matches
from hest_spatialdata.source.layout import PARTS, Part, element_parts

if TYPE_CHECKING:
    from rich.progress import Progress

_OPTION_NAMES = {f.name for f in fields(ConvertOptions)}


class ConversionError(RuntimeError):
    """Some samples failed; the others were written. ``summary`` says which and why.

    Parameters
    ----------
    summary
        The summary of the run.
    """

    def __init__(self, summary: BatchSummary) -> None:
        self.summary = summary
        failed = summary.by_status("failed")
        lines = [f"{r.sample_id}: {r.reason}" for r in failed]
        super().__init__(f"{len(failed)} of {len(summary.results)} samples failed:\n  " + "\n  ".join(lines))


def convert(
    hest_dir: str | Path,
    out_dir: str | Path,
    sample_ids: Iterable[str] | str | None = None,
    *,
    options: ConvertOptions | None = None,
    on_selected: Callable[[list[str], HubPlan | None], None] | None = None,
    on_result: Callable[[SampleResult], None] | None = None,
    progress: Progress | None = None,
    raise_on_failure: bool = True,
    **kwargs: Any,
) -> BatchSummary:
    """Convert HEST samples into ``out_dir/{id}.zarr`` SpatialData stores, resumably.

    Each store is written to a temporary sibling and renamed into place when complete. Complete stores are skipped
    (unless ``overwrite``), a folder in the way that is not a complete store is never touched, and a failing sample
    does not stop the others.

    Parameters
    ----------
    hest_dir
        The HEST root: a folder, or a remote root read without staging (``hf://datasets/MahmoodLab/hest[@rev]``,
        another fsspec URL); with ``from_hub``: the staging folder the samples are downloaded into.
    out_dir
        Output folder (created if needed).
    sample_ids
        Samples to convert; by default every sample of ``hest_dir`` (or, with ``from_hub``, of the catalog)
        matching the filters.
    options
        How to convert (:class:`hest_spatialdata.conversion.batch.ConvertOptions`); keyword arguments named like its
        fields override it.
    on_selected
        Called with the selected ids (and, with ``from_hub``, the hub files to fetch) before converting.
    on_result
        Called with each sample's result as it arrives.
    progress
        A rich progress display for per-sample write bars.
    raise_on_failure
        Raise :class:`ConversionError` at the end if any sample failed (the good ones are written first).
    **kwargs
        Fields of :class:`~hest_spatialdata.conversion.batch.ConvertOptions` (``overwrite``, ``elements``, ``workers``,
        ``scheduler``, ``from_hub``, ...) and catalog filters (``organ``, ``species``, ``technology``,
        ``oncotree``, ``disease_state``; see :func:`hest_spatialdata.source.filters.record_matches`).

    Returns
    -------
    The summary: one result per sample (done, skipped or failed, with the reason), timings and sizes.

    Raises
    ------
    ConversionError
        If a sample failed and ``raise_on_failure``.
    HestInputError
        If no sample is selected.
    """
    option_args = {k: v for k, v in kwargs.items() if k in _OPTION_NAMES}
    filters = {k: v for k, v in kwargs.items() if k not in _OPTION_NAMES}
    unknown = sorted(set(filters) - set(FILTER_COLUMNS))
    if unknown:
        raise TypeError(f"convert() got unexpected keyword argument(s) {', '.join(unknown)}")
    options = replace(options or ConvertOptions(), **option_args)
    ids = [sample_ids] if isinstance(sample_ids, str) else list(sample_ids or ())
    hub_plan = None
    if options.from_hub:
        hub_plan = plan_from_hub(
            ids or None, elements=options.elements, catalog_source=options.catalog_source, **filters
        )
        ids = list(hub_plan.files)
    else:
        if is_remote(hest_dir):
            _open_remote(hest_dir)  # access refused or root missing: one clear error before any sample
        elif not Path(hest_dir).is_dir():
            raise HestInputError(None, hest_dir, "HEST directory not found")
        ids = select_local_ids(hest_dir, ids, **filters)
    if not ids:
        where = "the catalog" if options.from_hub else hest_dir
        raise HestInputError(None, hest_dir, f"no sample selected in {where}")
    if on_selected is not None:
        on_selected(ids, hub_plan)
    summary = run_batch(hest_dir, out_dir, ids, options, hub_plan=hub_plan, on_result=on_result, progress=progress)
    if raise_on_failure and not summary.ok:
        raise ConversionError(summary)
    return summary


def select_local_ids(hest_dir: str | Path, ids: Iterable[str] = (), **filters: Any) -> list[str]:
    """Select samples of a local HEST folder: ``ids`` (default: all) whose metadata JSON match the filters.

    Parameters
    ----------
    hest_dir
        The HEST folder.
    ids
        Sample ids; every sample found by default.
    **filters
        ``organ``, ``species``, ``technology``, ``oncotree``, ``disease_state`` (see
        :func:`hest_spatialdata.source.filters.record_matches`), matched against each sample's metadata JSON.

    Returns
    -------
    The ids, in the given (or natural) order.
    """
    from hest_spatialdata.source.metadata import read_metadata

    wanted = normalise_filters(**filters)
    if wanted and is_remote(hest_dir) and _is_hest_on_hub(hest_dir):
        # the hub's catalog, rather than one metadata JSON per sample of HEST-1k
        from hest_spatialdata.roots import hub

        present = set(list_sample_ids(hest_dir))  # three folder listings
        return [i for i in hub.select_ids(list(ids) or None, **filters) if i in present]
    selected = list(dict.fromkeys(ids)) or list_sample_ids(hest_dir)
    if not wanted:
        return selected
    keep = []
    for sample_id in selected:
        if is_remote(hest_dir):
            metadata = sample_files(hest_dir, sample_id).get(Part.METADATA)
            path = None if metadata is None else metadata.local_copy()
        else:
            path = PARTS[Part.METADATA].path(hest_dir, sample_id)
        if path is not None and path.is_file() and record_matches(read_metadata(path, sample_id), wanted):
            keep.append(sample_id)
    return keep


def _is_hest_on_hub(hest_dir: str) -> bool:
    from hest_spatialdata.roots import hub
    from hest_spatialdata.roots.remote import open_root

    repo = open_root(hest_dir).repo
    return repo is not None and repo[1] == hub.REPO_ID


def _open_remote(hest_dir: str) -> None:
    from hest_spatialdata.roots.remote import open_root

    try:
        open_root(hest_dir)
    except FileNotFoundError as e:
        raise HestInputError(None, hest_dir, f"HEST root not found ({e})") from e


def plan_from_hub(
    ids: Iterable[str] | None = None,
    *,
    elements: Iterable[str] | None = None,
    parts: Iterable[str] | None = None,
    catalog_source: str | Path | None = None,
    token: str | bool | None = None,
    **filters: Any,
) -> HubPlan:
    """Which hub files each selected sample needs.

    Parameters
    ----------
    ids
        Sample ids; with no ids and no filters, every sample of the catalog.
    elements
        Elements to write: only their source files (and the metadata) are fetched; all by default.
    parts
        Hub folders to fetch instead (every file of the sample in them).
    catalog_source
        Local catalog CSV for the filters.
    token
        Hugging Face token; default ``HF_TOKEN`` or the stored login.
    **filters
        Catalog filters (see :func:`hest_spatialdata.source.filters.record_matches`).

    Returns
    -------
    The hub commit and the files of each sample (empty for ids not on the hub).
    """
    from hest_spatialdata.roots import hub

    sample_ids = hub.select_ids(ids, catalog_source=catalog_source, token=token, **filters)
    commit = hub.resolve_revision(token=token)
    files = hub.hub_files(commit, token=token)
    sources = element_parts(elements) if elements else None
    return HubPlan(
        commit, {sample_id: hub.sample_hub_files(files, sample_id, parts, sources=sources) for sample_id in sample_ids}
    )
