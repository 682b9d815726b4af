"""HEST-1k on the Hugging Face Hub: the catalog of samples, and downloads of selected samples and parts.

The dataset (``MahmoodLab/hest``) is gated: a user must accept its terms on the hub and authenticate with a token
(``HF_TOKEN`` or a stored ``hf auth login``). Every access refusal becomes one :class:`HubAccessError` saying so.

``HF_ENDPOINT`` is read when a function is called (huggingface_hub itself reads it once, at import), so a mirror or
a test server can be chosen at any time.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from hest_spatialdata.source.filters import filter_catalog, normalise_filters
from hest_spatialdata.source.layout import PARTS, Part, hub_patterns, matches_any
from hest_spatialdata.source.metadata import read_catalog

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pandas as pd
    from huggingface_hub import HfApi

REPO_ID = "MahmoodLab/hest"
REPO_TYPE = "dataset"
DATASET_URL = f"https://huggingface.co/datasets/{REPO_ID}"
_CATALOG_NAME = re.compile(r"^HEST_v(\d+)_(\d+)_(\d+)\.csv$")
#: A cached catalog younger than this (seconds) is used without asking the hub for a newer one.
CATALOG_MAX_AGE = 24 * 3600.0


class HubError(RuntimeError):
    """The hub could not be reached or answered with an error."""


class HubAccessError(HubError):
    """The hub refused access to HEST-1k (gated dataset, terms not accepted, missing or invalid token)."""


class HubUnreachableError(HubError):
    """The hub could not be reached (network down, offline mode)."""


@dataclass(frozen=True)
class SampleDownload:
    """The files of one sample now present in the HEST folder.

    Parameters
    ----------
    sample_id
        The sample id.
    files
        Local paths, one per hub file of the sample that was asked for.
    nbytes
        Their total size in bytes.
    """

    sample_id: str
    files: tuple[Path, ...]
    nbytes: int


# --------------------------------------------------------------------------------------------- catalog


def catalog(
    source: str | Path | None = None,
    *,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    max_age: float = CATALOG_MAX_AGE,
    **filters: str | Iterable[str] | None,
) -> pd.DataFrame:
    """Read the HEST-1k catalog: one row per sample (id, organ, species, technology, oncotree code, slide size ...).

    Parameters
    ----------
    source
        A local catalog CSV; by default the newest ``HEST_v*_*_*.csv`` on the hub, downloaded once into the
        huggingface_hub cache (used as is when the hub cannot be reached).
    token
        Hugging Face token; default ``HF_TOKEN`` or the stored login.
    cache_dir
        huggingface_hub cache folder; default ``HF_HUB_CACHE``.
    max_age
        Use a cached catalog younger than this many seconds without asking the hub for a newer one.
    **filters
        ``ids``, ``organ``, ``species``, ``technology``, ``oncotree``, ``disease_state``: see
        :func:`hest_spatialdata.source.filters.record_matches`.

    Returns
    -------
    The catalog as read by :func:`hest_spatialdata.source.metadata.read_catalog`, filtered.

    Raises
    ------
    HubAccessError
        If the hub refuses access (accept the terms and set ``HF_TOKEN``).
    HubError
        If the hub cannot be reached and no catalog is cached.
    """
    path = Path(source) if source is not None else catalog_path(token=token, cache_dir=cache_dir, max_age=max_age)
    return filter_catalog(read_catalog(path), **filters)


def catalog_path(
    *, token: str | bool | None = None, cache_dir: str | Path | None = None, max_age: float = CATALOG_MAX_AGE
) -> Path:
    """Find the newest catalog CSV of the hub, downloading it into the huggingface_hub cache if needed.

    Parameters
    ----------
    token
        Hugging Face token; default ``HF_TOKEN`` or the stored login.
    cache_dir
        huggingface_hub cache folder; default ``HF_HUB_CACHE``.
    max_age
        A cached catalog younger than this many seconds is returned without any request.

    Returns
    -------
    The path of the CSV in the huggingface_hub cache (the cached one when the hub cannot be reached).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.hf_api import RepoFile

    cached = _cached_catalogs(cache_dir)
    newest = cached.get(newest_catalog_name(cached) or "")
    if newest is not None and time.time() - newest.stat().st_mtime < max_age:
        return newest
    try:
        with hub_errors():
            tree = hub_api(token).list_repo_tree(REPO_ID, repo_type=REPO_TYPE)
            root = [f.path for f in tree if isinstance(f, RepoFile)]
            name = newest_catalog_name(root)
            if name is None:
                raise HubError(f"no HEST_v*_*_*.csv catalog at the root of {REPO_ID} on {_endpoint_name()}")
            path = Path(
                hf_hub_download(
                    REPO_ID, name, repo_type=REPO_TYPE, cache_dir=cache_dir, token=token, endpoint=current_endpoint()
                )
            )
        os.utime(path)  # checked now: fresh for another max_age
        return path
    except HubUnreachableError:
        if newest is None:
            raise
        return newest


def newest_catalog_name(names: Iterable[str]) -> str | None:
    """Pick the catalog CSV of the highest version among file names (``HEST_v1_3_0.csv`` beats ``HEST_v1_1_0.csv``)."""
    versions = {tuple(int(v) for v in m.groups()): name for name in names if (m := _CATALOG_NAME.match(name))}
    return versions[max(versions)] if versions else None


def _cached_catalogs(cache_dir: str | Path | None) -> dict[str, Path]:
    from huggingface_hub import constants

    root = Path(cache_dir or constants.HF_HUB_CACHE) / f"{REPO_TYPE}s--{REPO_ID.replace('/', '--')}" / "snapshots"
    return {path.name: path for path in root.glob("*/HEST_v*_*_*.csv")}


# --------------------------------------------------------------------------------------------- download


def download(
    hest_dir: str | Path,
    ids: Iterable[str] | str | None = None,
    *,
    parts: Iterable[str] | None = None,
    catalog_source: str | Path | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    progress: bool = True,
    on_sample: Callable[[SampleDownload], None] | None = None,
    **filters: str | Iterable[str] | None,
) -> list[SampleDownload]:
    """Download HEST-1k samples from the hub into a HEST folder, resuming what is already there.

    Each sample is fetched with ``snapshot_download(repo_id="MahmoodLab/hest", repo_type="dataset",
    allow_patterns=<its files>, local_dir=hest_dir)``: complete files are skipped, so an interrupted download
    resumes and a repeated one transfers nothing.

    Parameters
    ----------
    hest_dir
        The HEST folder (created if needed); files keep their hub paths (``wsis/{id}.tif``, ...).
    ids
        Sample ids; with no ids and no filters, every sample of the catalog.
    parts
        Hub folders to fetch (see :data:`hest_spatialdata.source.layout.HUB_FOLDERS`); default: the files the converter
        reads (slide, st, metadata, patches, nuclei, tissue contours, Xenium segmentation and transcripts, where the
        sample has them).
    catalog_source
        Local catalog CSV for the filters (default: the hub's newest).
    token
        Hugging Face token; default ``HF_TOKEN`` or the stored login.
    revision
        Hub branch, tag or commit; default the newest commit of ``main``.
    progress
        Show huggingface_hub's download progress bars.
    on_sample
        Called with each :class:`SampleDownload` once its files are complete.
    **filters
        Catalog filters: ``organ``, ``species``, ``technology``, ``oncotree``, ``disease_state``.

    Returns
    -------
    One :class:`SampleDownload` per sample.

    Raises
    ------
    HubAccessError
        If the hub refuses access (accept the terms at https://huggingface.co/datasets/MahmoodLab/hest and set
        ``HF_TOKEN``).
    HubError
        If the hub cannot be reached, or an id has no file on the hub.
    """
    sample_ids = select_ids(ids, catalog_source=catalog_source, token=token, **filters)
    commit = resolve_revision(token=token, revision=revision)
    files = hub_files(commit, token=token)
    plans = {sample_id: sample_hub_files(files, sample_id, parts) for sample_id in sample_ids}
    missing = [sample_id for sample_id, plan in plans.items() if not plan]
    if missing:
        raise HubError(f"no file of {', '.join(missing[:10])} on the hub{' ...' if len(missing) > 10 else ''}")
    done = []
    for sample_id, plan in plans.items():
        result = fetch_files(hest_dir, sample_id, plan, commit=commit, token=token, progress=progress)
        done.append(result)
        if on_sample is not None:
            on_sample(result)
    return done


def select_ids(
    ids: Iterable[str] | str | None = None,
    *,
    catalog_source: str | Path | None = None,
    token: str | bool | None = None,
    **filters: str | Iterable[str] | None,
) -> list[str]:
    """Sample ids to fetch: ``ids`` as given when there is no filter, else the catalog rows matching all of them."""
    wanted = normalise_filters(ids=ids, **filters)
    if set(wanted) == {"ids"}:
        return list(dict.fromkeys(wanted["ids"]))
    rows = catalog(catalog_source, token=token, **wanted)
    return rows["id"].tolist()


def resolve_revision(*, token: str | bool | None = None, revision: str | None = None) -> str:
    """Check that the user may read HEST-1k and return the commit of ``revision`` (default ``main``).

    Raises
    ------
    HubAccessError
        If the dataset is gated for this user or the token is missing or invalid.
    """
    api = hub_api(token)
    with hub_errors():
        # Without this check snapshot_download would quietly fall back to local files on a 401/403.
        api.auth_check(REPO_ID, repo_type=REPO_TYPE)
        info = api.repo_info(REPO_ID, repo_type=REPO_TYPE, revision=revision)
    if not info.sha:
        raise HubError(f"{_endpoint_name()} gave no commit for {REPO_ID}")
    return info.sha


def hub_files(commit: str, *, token: str | bool | None = None) -> dict[str, int]:
    """Every file of the dataset at ``commit`` with its size in bytes (listed once per process and commit)."""
    return dict(_list_files(current_endpoint(), commit, token))


@cache
def _list_files(endpoint: str | None, commit: str, token: str | bool | None) -> tuple[tuple[str, int], ...]:
    from huggingface_hub.hf_api import RepoFile

    with hub_errors():
        tree = hub_api(token).list_repo_tree(REPO_ID, repo_type=REPO_TYPE, revision=commit, recursive=True)
        return tuple((f.path, int(f.size or 0)) for f in tree if isinstance(f, RepoFile))


def sample_hub_files(
    files: Mapping[str, int],
    sample_id: str,
    parts: Iterable[str] | None = None,
    *,
    sources: Iterable[Part | str] | None = None,
) -> dict[str, int]:
    """Select the hub files of one sample to fetch, with their sizes.

    Parameters
    ----------
    files
        Every hub file and its size (:func:`hub_files`).
    sample_id
        The sample id.
    parts
        Hub folders (:data:`hest_spatialdata.source.layout.HUB_FOLDERS`), all their files of the sample; default: for
        each source part the converter reads, its preferred file name present on the hub.
    sources
        Without ``parts``: the source parts to fetch (:class:`hest_spatialdata.source.layout.Part`); all the converter
        reads by default.
    """
    if parts is None:
        wanted = {Part(s) for s in sources} if sources is not None else {p for p, spec in PARTS.items() if spec.reader}
        wanted.add(Part.METADATA)
        chosen = []
        for part in wanted:
            chosen += [name for name in PARTS[part].relative_paths(sample_id) if name in files][:1]
        return {name: files[name] for name in sorted(chosen)}
    patterns = hub_patterns(sample_id, parts)
    return {name: size for name, size in files.items() if matches_any(name, patterns)}


def fetch_files(
    hest_dir: str | Path,
    sample_id: str,
    files: Mapping[str, int],
    *,
    commit: str,
    token: str | bool | None = None,
    endpoint: str | None = None,
    progress: bool = True,
) -> SampleDownload:
    """Download (or resume) the given hub files of one sample into ``hest_dir`` with ``snapshot_download``.

    Parameters
    ----------
    hest_dir
        The HEST folder.
    sample_id
        The sample id.
    files
        Hub paths to fetch, with their sizes (:func:`sample_hub_files`).
    commit
        The hub commit to fetch them at (:func:`resolve_revision`).
    token
        Hugging Face token; default ``HF_TOKEN`` or the stored login.
    endpoint
        Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.
    progress
        Show huggingface_hub's progress bars.

    Returns
    -------
    The local files.
    """
    from huggingface_hub import snapshot_download

    root = Path(hest_dir)
    root.mkdir(parents=True, exist_ok=True)
    with hub_errors(), _progress_bars(progress):
        snapshot_download(
            repo_id=REPO_ID,
            repo_type=REPO_TYPE,
            revision=commit,
            allow_patterns=sorted(files),
            local_dir=root,
            token=token,
            endpoint=endpoint or current_endpoint(),
        )
    return SampleDownload(sample_id, tuple(root / name for name in sorted(files)), sum(files.values()))


def remove_downloaded(hest_dir: str | Path, download: SampleDownload) -> None:
    """Delete the files of a downloaded sample and huggingface_hub's records of them (a later download refetches)."""
    root = Path(hest_dir)
    for path in download.files:
        path.unlink(missing_ok=True)
        record = root / ".cache" / "huggingface" / "download" / f"{path.relative_to(root).as_posix()}.metadata"
        record.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- hub access


def access_message(status: int | None = None) -> str:
    """Explain a refusal of the hub: how to get access to the gated dataset."""
    code = f" (HTTP {status})" if status else ""
    return (
        f"the Hugging Face Hub refused access to the HEST-1k dataset {REPO_ID}{code}. HEST-1k is gated: log in at "
        f"{DATASET_URL}, accept its terms of use, create an access token (https://huggingface.co/settings/tokens) "
        "and set it as HF_TOKEN (or run `hf auth login`)."
    )


@contextmanager
def hub_errors() -> Iterator[None]:
    """Turn huggingface_hub's errors into ours, with messages a user can act on.

    Refusals become :class:`HubAccessError`, other HTTP errors :class:`HubError`, network failures
    :class:`HubUnreachableError`.
    """
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        yield
    except RepositoryNotFoundError as e:  # GatedRepoError is one; the hub also says "not found" without a token
        raise HubAccessError(access_message(http_status(e))) from e
    except HfHubHTTPError as e:
        if http_status(e) in (401, 403):
            raise HubAccessError(access_message(http_status(e))) from e
        raise HubError(f"{_endpoint_name()} answered {e}") from e
    except network_errors() as e:
        raise HubUnreachableError(f"cannot reach {_endpoint_name()}: {type(e).__name__}: {e}") from e


def http_status(error: Exception) -> int | None:
    """The HTTP status code carried by a huggingface_hub / HTTP client error, if any."""
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


@cache
def network_errors() -> tuple[type[BaseException], ...]:
    """The exception types meaning "the hub could not be reached" for the installed HTTP client."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    # huggingface_hub's HTTP client changed over versions (requests, httpx, httpx2): catch the one installed.
    errors: list[type[BaseException]] = [OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "ConnectionError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()


def current_endpoint() -> str | None:
    """Return the hub URL in ``HF_ENDPOINT`` now (huggingface_hub reads it once, at import), or ``None``."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/")
    return endpoint or None


def _endpoint_name() -> str:
    return current_endpoint() or "https://huggingface.co"


def hub_api(token: str | bool | None) -> HfApi:
    """An ``HfApi`` on the current endpoint (``HF_ENDPOINT`` read now), identifying this library."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=current_endpoint(), token=token, library_name="hest-spatialdata")
