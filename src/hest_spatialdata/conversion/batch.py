"""Convert many HEST samples: in this process, on local worker processes, or on a Dask cluster; resumable.

- Samples whose store is already complete are skipped, checked from the stores' ``zarr.json`` alone (no spatialdata
  import), so a re-run after an interruption only does what is left; partial stores of dead converters are removed.
- Each sample is one task; a failing sample is recorded with its reason and never stops the others.
- Workers are long-lived processes that import spatialdata once (a worker plugin / the first task) and convert one
  sample at a time, writing its image with a bounded number of threads: memory per worker does not grow with the
  number of samples.
- With ``from_hub``, each task downloads its sample's files into a staging HEST folder first and (optionally)
  deletes them once the store is written, so the whole dataset never sits on disk.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hest_spatialdata.errors import HestInputError, StoreExistsError
from hest_spatialdata.roots.samples import sample_files
from hest_spatialdata.storage.locations import StoreLocation
from hest_spatialdata.storage.store import store_attrs, store_is_complete

if TYPE_CHECKING:
    from distributed import Client
    from rich.progress import Progress
    from rich.table import Table
    from upath import UPath

Status = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class HubPlan:
    """The hub files of the selected samples, at one commit.

    Parameters
    ----------
    commit
        Hub commit of the files.
    files
        ``{sample id: {hub path: size}}``; empty for ids not on the hub.
    """

    commit: str
    files: dict[str, dict[str, int]]


@dataclass(frozen=True)
class HubFiles:
    """Where a task gets its sample from when converting from the hub.

    Parameters
    ----------
    commit
        Hub commit of the files (the same for every sample of a run).
    files
        ``(hub path, size)`` of the sample's files.
    endpoint
        Hub URL (``HF_ENDPOINT`` of the submitting process), ``None`` for https://huggingface.co.
    delete_downloaded
        Delete the sample's downloaded files once its store is written.
    """

    commit: str
    files: tuple[tuple[str, int], ...]
    endpoint: str | None = None
    delete_downloaded: bool = False


@dataclass(frozen=True)
class ConvertOptions:
    """How to convert samples: what the ``convert`` command's options set, passed as one object to the batch.

    Parameters
    ----------
    overwrite
        Replace existing stores (nothing is skipped).
    elements
        Element names to write; all available by default.
    chunk_size
        Image chunk side in pixels; the converter's default when ``None``.
    workers
        Local worker processes (a ``dask.distributed.LocalCluster``, one thread each); 1 converts in this process.
    scheduler
        Address of a running dask.distributed scheduler (or a ``Client``): every sample becomes a task on its
        workers. Start them with ``--nthreads 1`` so that each converts one sample at a time.
    threads
        Threads writing one sample's image; default: the cores divided among the local workers, or dask's default
        (one per core of the worker's machine) with a scheduler.
    memory_limit
        Memory limit of each local worker (dask syntax, e.g. ``"4GiB"``; ``"auto"`` shares the RAM among them).
    from_hub
        Select the samples in the hub's catalog and download each one's files into the HEST folder (a staging
        folder) just before converting it.
    delete_downloaded
        With ``from_hub``: delete each sample's downloaded files once its store is written.
    catalog_source
        Local catalog CSV for the filters with ``from_hub`` (default: the hub's newest).
    storage_options
        fsspec options of a URL output (``s3://...``): endpoint, credentials ... (never printed).
    """

    overwrite: bool = False
    elements: tuple[str, ...] | None = None
    chunk_size: int | None = None
    workers: int = 1
    scheduler: str | Client | None = None
    threads: int | None = None
    memory_limit: str | None = "auto"
    from_hub: bool = False
    delete_downloaded: bool = False
    catalog_source: str | Path | None = None
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.elements is not None:
            object.__setattr__(self, "elements", tuple(self.elements) or None)
        if self.workers > 1 and self.scheduler is not None:
            raise ValueError("workers and scheduler exclude each other")
        if self.delete_downloaded and not self.from_hub:
            raise ValueError("delete_downloaded only applies with from_hub")

    def threads_per_sample(self) -> int | None:
        """Threads writing one sample: as given, else the cores shared among local workers (``None``: dask's)."""
        if self.threads or self.scheduler is not None or self.workers <= 1:
            return self.threads
        return max(1, (os.cpu_count() or 1) // self.workers)


@dataclass(frozen=True)
class SampleJob:
    """One sample to convert, as sent to a worker (plain data: it is pickled).

    Parameters
    ----------
    sample_id
        The sample id.
    hest_dir
        HEST folder holding the sample (the staging folder with ``hub``); must be reachable from the worker.
    out_dir
        Output folder of the stores (its storage options within); must be reachable from the worker.
    overwrite
        Replace an existing store.
    elements
        Element names to write; all available by default.
    chunk_size
        Image chunk side in pixels; the converter's default when ``None``.
    threads
        Threads writing the image; dask's default (one per core) when ``None``.
    hub
        Download the sample from the hub first.
    tenx
        A 10x run to import instead of a HEST sample: the keyword arguments of
        :func:`hest_spatialdata.tenx.import_10x` (``path``, ``image``, ``alignment``, ``nuclei``, ``metadata``).
    """

    sample_id: str
    hest_dir: str
    out_dir: StoreLocation
    overwrite: bool = False
    elements: tuple[str, ...] | None = None
    chunk_size: int | None = None
    threads: int | None = None
    hub: HubFiles | None = None
    tenx: dict[str, Any] | None = None


@dataclass
class SampleResult:
    """What happened to one sample.

    Parameters
    ----------
    sample_id
        The sample id.
    status
        ``"done"``, ``"skipped"`` (store already complete) or ``"failed"``.
    reason
        Why it was skipped or failed.
    store
        Path of the store.
    seconds
        Conversion wall time (download excluded).
    download_seconds
        Download wall time (``from_hub`` only).
    cpu_seconds
        CPU time of the worker process during the conversion (all its threads): the cost of the sample whatever
        the load of the machine.
    source_bytes
        Size of the source files the store was made from.
    store_bytes
        Size of the store on disk.
    worker
        ``host:pid`` of the process that did the work.
    warm
        Whether spatialdata was already imported when the task started (it is imported once per worker).
    peak_rss_mb
        Peak resident memory of the worker process so far (MB), after this sample.
    """

    sample_id: str
    status: Status
    reason: str = ""
    store: str | None = None
    seconds: float = 0.0
    download_seconds: float = 0.0
    cpu_seconds: float = 0.0
    source_bytes: int = 0
    store_bytes: int = 0
    worker: str = ""
    warm: bool = False
    peak_rss_mb: float = 0.0


@dataclass
class BatchSummary:
    """The outcome of a batch run.

    Parameters
    ----------
    results
        One per sample, in completion order.
    seconds
        Wall time of the run.
    mode
        ``"in-process"``, ``"local-cluster"`` or ``"scheduler"``.
    workers
        Number of worker processes.
    """

    results: list[SampleResult] = field(default_factory=list)
    seconds: float = 0.0
    mode: str = "in-process"
    workers: int = 1

    def by_status(self, status: Status) -> list[SampleResult]:
        """Results with this status."""
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> bool:
        """Whether no sample failed."""
        return not self.by_status("failed")

    def counts(self) -> dict[str, int]:
        """Count the samples done, skipped and failed."""
        return {status: len(self.by_status(status)) for status in ("done", "skipped", "failed")}

    def to_dict(self) -> dict[str, Any]:
        """Summarise as JSON-ready data: counts, throughput and every sample's result."""
        done = self.by_status("done")
        minutes = self.seconds / 60 if self.seconds else 0.0
        source_gb = sum(r.source_bytes for r in done) / 1e9
        return {
            "mode": self.mode,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "samples_per_min": round(len(done) / minutes, 3) if minutes else None,
            "source_gb_per_min": round(source_gb / minutes, 4) if minutes else None,
            "samples": [asdict(r) for r in self.results],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        return path

    def table(self) -> Table:
        """Tabulate with rich: one row per sample, failures first, with the reason."""
        from rich.table import Table

        order = {"failed": 0, "done": 1, "skipped": 2}
        counts = ", ".join(f"{n} {status}" for status, n in self.counts().items())
        table = Table(title=f"{len(self.results)} samples: {counts} in {self.seconds:.1f} s ({self.mode})")
        for column in ("sample", "status", "seconds", "source MB", "store MB", "reason"):
            numeric = column in ("seconds", "source MB", "store MB")
            table.add_column(column, justify="right" if numeric else "left", overflow="fold")
        colour = {"done": "green", "skipped": "cyan", "failed": "red"}
        for r in sorted(self.results, key=lambda r: (order[r.status], r.sample_id)):
            table.add_row(
                r.sample_id,
                f"[{colour[r.status]}]{r.status}[/]",
                f"{r.seconds:.1f}" if r.status == "done" else "",
                f"{r.source_bytes / 1e6:.1f}" if r.source_bytes else "",
                f"{r.store_bytes / 1e6:.1f}" if r.store_bytes else "",
                r.reason,
            )
        return table


class FailedSamplesError(RuntimeError):
    """Some samples of a run failed; the others were done. ``summary`` says which and why.

    Parameters
    ----------
    summary
        The summary of the run.
    """

    #: What the run's items are called in the message.
    items = "samples"

    def __init__(self, summary: BatchSummary) -> None:
        self.summary = summary
        failed = summary.by_status("failed")
        lines = [f"{r.sample_id}: {r.reason}" for r in failed]
        super().__init__(f"{len(failed)} of {len(summary.results)} {self.items} failed:\n  " + "\n  ".join(lines))


# --------------------------------------------------------------------------------------------- the task


def convert_one(job: SampleJob) -> SampleResult:
    """Convert one sample (downloading it first with ``job.hub``); never raises, failures are results.

    This is the task run on workers: top-level and given plain data, so that it pickles.

    Parameters
    ----------
    job
        The sample and how to convert it.

    Returns
    -------
    The sample's result.
    """
    result = SampleResult(job.sample_id, "failed", worker=_worker_name(), warm="spatialdata" in sys.modules)
    try:
        _run_job(job, result)
    except Exception as e:  # noqa: BLE001 - any error is this sample's failure, recorded with its reason
        result.status, result.reason = "failed", describe_error(e)
    result.peak_rss_mb = _peak_rss_mb()
    return result


def _run_job(job: SampleJob, result: SampleResult) -> None:
    import dask

    from hest_spatialdata.storage.store import convert_sample

    downloaded = None
    if job.hub is not None:
        from hest_spatialdata.roots.hub import fetch_files

        start = time.perf_counter()
        files = dict(job.hub.files)
        downloaded = fetch_files(
            job.hest_dir, job.sample_id, files, commit=job.hub.commit, endpoint=job.hub.endpoint, progress=False
        )
        result.download_seconds = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    options = {"overwrite": job.overwrite, "elements": job.elements, "chunk_size": job.chunk_size}
    with dask.config.set(scheduler="threads", num_workers=job.threads):
        if job.tenx is not None:
            from hest_spatialdata.tenx import import_10x

            run = dict(job.tenx)
            path = import_10x(run.pop("path"), job.out_dir, job.sample_id, **run, **options)
        else:
            path = convert_sample(job.hest_dir, job.sample_id, job.out_dir, **options)
    result.seconds, result.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    result.status, result.store = "done", str(path)
    result.source_bytes, result.store_bytes = _source_bytes(path), _tree_bytes(path)
    if downloaded is not None and job.hub is not None and job.hub.delete_downloaded:
        from hest_spatialdata.roots.hub import remove_downloaded

        remove_downloaded(job.hest_dir, downloaded)


def describe_error(error: BaseException) -> str:
    """One line saying why a sample failed: the message of our own errors, else the exception type and message."""
    if isinstance(error, HestInputError):  # the sample is named beside the reason already
        return f"{error.path}: {error.problem}" if error.path is not None else error.problem
    if isinstance(error, StoreExistsError) or type(error).__module__.startswith("hest_spatialdata"):
        return str(error)
    return f"{type(error).__name__}: {error}".strip()


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _source_bytes(store: Path | UPath) -> int:
    sources = (store_attrs(store) or {}).get("source_files", {})
    return sum(int(info.get("size", 0)) for info in sources.values() if isinstance(info, dict))


def _tree_bytes(path: Path | UPath) -> int:
    if not isinstance(path, Path):  # one listing, not a request per object
        return int(path.fs.du(path.path))
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------- running


def run_batch(
    hest_dir: str | Path,
    out_dir: str | Path | StoreLocation,
    sample_ids: Iterable[str],
    options: ConvertOptions | None = None,
    *,
    hub_plan: HubPlan | None = None,
    on_result: Callable[[SampleResult], None] | None = None,
    progress: Progress | None = None,
    tenx_runs: Mapping[str, dict[str, Any]] | None = None,
) -> BatchSummary:
    """Convert samples, skipping complete stores, each sample a task; one failure does not stop the others.

    :func:`hest_spatialdata.convert` selects the samples and calls this.

    Parameters
    ----------
    hest_dir
        HEST folder (the staging folder with ``hub_plan``); workers must see the same path.
    out_dir
        Output folder of the stores (``{id}.zarr``), parsed with ``options.storage_options`` unless it is a
        :class:`~hest_spatialdata.storage.locations.StoreLocation` already; workers must see the same path.
    sample_ids
        Samples to convert.
    options
        How to convert them.
    hub_plan
        Each sample's hub files, downloaded into ``hest_dir`` by its task before converting.
    on_result
        Called with each result as it arrives (skips first).
    progress
        A rich progress display for the in-process mode's write bars.
    tenx_runs
        Sample id -> a 10x run to import instead (:attr:`SampleJob.tenx`): ``hest-to-sdata import --sheet``.

    Returns
    -------
    The summary of the run.
    """
    options = options or ConvertOptions()
    tenx_runs = tenx_runs or {}
    start = time.perf_counter()
    jobs, summary = [], BatchSummary()
    out = StoreLocation.of(out_dir, options.storage_options)
    common = {
        "hest_dir": str(hest_dir),
        "out_dir": out,
        "overwrite": options.overwrite,
        "elements": options.elements,
        "chunk_size": options.chunk_size,
        "threads": options.threads_per_sample(),
    }
    for sample_id in dict.fromkeys(sample_ids):
        result = _precheck(sample_id, out, options.overwrite, hub_plan)
        if result is not None:
            _record(summary, result, on_result)
            continue
        hub = None
        if hub_plan is not None:
            files = tuple(sorted((hub_plan.files.get(sample_id) or {}).items()))
            hub = HubFiles(hub_plan.commit, files, _endpoint(), options.delete_downloaded)
        jobs.append(SampleJob(sample_id, hub=hub, tenx=tenx_runs.get(sample_id), **common))
    scheduler, workers = options.scheduler, options.workers
    if scheduler is not None or workers > 1:
        jobs.sort(key=_job_bytes, reverse=True)  # largest first: the longest samples do not start last
    if scheduler is not None:
        summary.mode = "scheduler"
        _run_on_cluster(jobs, summary, on_result, address=scheduler)
    elif workers > 1:
        summary.mode, summary.workers = "local-cluster", workers
        _run_on_cluster(jobs, summary, on_result, workers=workers, memory_limit=options.memory_limit)
    else:
        _run_in_process(jobs, summary, on_result, progress)
    summary.seconds = time.perf_counter() - start
    return summary


def _precheck(sample_id: str, out: StoreLocation, overwrite: bool, hub_plan: HubPlan | None) -> SampleResult | None:
    path = out.store(sample_id)
    if not overwrite and store_is_complete(path):
        return SampleResult(sample_id, "skipped", "store already complete", store=str(path))
    if out.url:
        from hest_spatialdata.storage._publish import remove_partial

        remove_partial(path)  # an abandoned upload (its converter is gone): the objects go before reconverting
    if hub_plan is not None and not hub_plan.files.get(sample_id):
        return SampleResult(sample_id, "failed", "no file of this sample on the hub (unknown id?)")
    return None


def _job_bytes(job: SampleJob) -> int:
    if job.hub is not None:
        return sum(size for _, size in job.hub.files)
    if job.tenx is not None:  # the H&E is most of a run's bytes
        image = job.tenx.get("image")
        return Path(image).stat().st_size if image is not None and Path(image).is_file() else 0
    try:
        files = sample_files(job.hest_dir, job.sample_id)
    except HestInputError:
        return 0
    return sum(files.size(part) for part in files.paths)


def _record(summary: BatchSummary, result: SampleResult, on_result: Callable[[SampleResult], None] | None) -> None:
    summary.results.append(result)
    if on_result is not None:
        on_result(result)


def _run_in_process(
    jobs: list[SampleJob],
    summary: BatchSummary,
    on_result: Callable[[SampleResult], None] | None,
    progress: Progress | None,
) -> None:
    # No warm-up here: the first sample encodes its slide while spatialdata is imported (store.convert_sample).
    for job in jobs:
        if progress is None or job.hub is not None:
            _record(summary, convert_one(job), on_result)
            continue
        from hest_spatialdata._progress import DaskTaskProgress

        with DaskTaskProgress(progress, f"{job.sample_id}: writing"):
            _record(summary, convert_one(job), on_result)


def _run_on_cluster(
    jobs: list[SampleJob],
    summary: BatchSummary,
    on_result: Callable[[SampleResult], None] | None,
    *,
    address: str | Client | None = None,
    workers: int = 1,
    memory_limit: str | None = "auto",
) -> None:
    from contextlib import ExitStack

    from distributed import Client, LocalCluster, as_completed

    from hest_spatialdata.conversion._dask_plugin import WarmUpPlugin

    if not jobs:
        return
    with ExitStack() as stack:
        if isinstance(address, Client):
            client = address
        elif address is not None:
            client = stack.enter_context(Client(address))
        else:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=memory_limit,
                dashboard_address="127.0.0.1:0",  # any free local port: no clash with another cluster's 8787
                silence_logs=logging.ERROR,
            )
            stack.enter_context(cluster)
            client = stack.enter_context(Client(cluster))
        summary.workers = len(client.nthreads()) or workers
        client.register_plugin(WarmUpPlugin())
        futures = {
            client.submit(convert_one, job, key=f"hest-{job.sample_id}-{os.urandom(4).hex()}"): job for job in jobs
        }
        for future in as_completed(futures):
            _record(summary, _future_result(future, futures[future]), on_result)


def _future_result(future: Any, job: SampleJob) -> SampleResult:
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001 - a lost worker (KilledWorker, e.g. out of memory) fails this sample only
        return SampleResult(job.sample_id, "failed", describe_error(e))


def _endpoint() -> str | None:
    from hest_spatialdata.roots.hub import current_endpoint

    return current_endpoint()
