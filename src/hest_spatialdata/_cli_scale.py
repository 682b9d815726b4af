"""The scale-out part of the ``hest-to-sdata`` CLI: ``list``, ``download``, ``validate`` and batch ``convert``.

Kept apart from ``cli.py`` (which registers these commands and calls :func:`convert_batch`), and light to import: the
hub, batch and validation modules load when a command runs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import pandas as pd

    from hest_spatialdata.batch import BatchSummary, SampleResult

FILTER_NAMES = ("organ", "species", "technology", "oncotree", "disease_state")
#: Catalog columns shown by ``list`` as a table (csv and json give every column).
TABLE_COLUMNS = {
    "id": "id",
    "technology": "technology",
    "species": "species",
    "organ": "organ",
    "oncotree_code": "oncotree",
    "disease_state": "disease",
    "spots_under_tissue": "spots",
}


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the catalog filters (``--organ``, ``--species``, ``--technology``, ``--oncotree``, ``--disease-state``)."""
    helps = {
        "organ": "Organ, e.g. Breast, Bowel, 'Spinal cord'.",
        "species": "Species: 'Homo sapiens' (human) or 'Mus musculus' (mouse).",
        "technology": "Technology: Visium, 'Visium HD' (incl. 3'), Xenium (incl. 5k), 'Spatial Transcriptomics'.",
        "oncotree": "OncoTree code, e.g. IDC, COAD.",
        "disease_state": "Disease state, e.g. Cancer, Healthy.",
    }
    for name in reversed(FILTER_NAMES):
        flag = f"--{name.replace('_', '-')}"
        command = click.option(flag, name, multiple=True, help=f"{helps[name]} Repeatable or comma separated.")(command)
    return command


def filters_of(values: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The filters given on the command line, by name."""
    return {name: values[name] for name in FILTER_NAMES if values.get(name)}


def fail(message: str, code: int = 1) -> None:
    """Print an error and exit."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


# --------------------------------------------------------------------------------------------- list


@click.command("list")
@click.option("--id", "sample_ids", multiple=True, help="Sample id (repeatable).")
@filter_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option(
    "--catalog",
    "catalog_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Local catalog CSV (HEST_v1_*_0.csv). [default: the newest on the hub, cached]",
)
def list_command(sample_ids: tuple[str, ...], fmt: str, catalog_csv: Path | None, **filters: Any) -> None:
    """List HEST-1k samples from the catalog (organ, species, technology, oncotree code, size)."""
    from hest_spatialdata.errors import HestInputError
    from hest_spatialdata.hub import HubError, catalog

    try:
        frame = catalog(catalog_csv, ids=sample_ids, **filters_of(filters))
    except (HubError, HestInputError) as e:
        fail(f"{e}\n(a local copy of the catalog works offline: --catalog HEST_v1_3_0.csv)")
    if fmt == "csv":
        click.echo(frame.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(frame.to_json(orient="records", date_format="iso", indent=1))
    else:
        _print_catalog(frame)


def _print_catalog(frame: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = {c: label for c, label in TABLE_COLUMNS.items() if c in frame.columns}
    has_size = {"fullres_px_width", "fullres_px_height"} <= set(frame.columns)
    mpix = frame["fullres_px_width"] * frame["fullres_px_height"] / 1e6 if has_size else None
    caption = f"{len(frame)} samples" + (f", {mpix.sum() / 1e3:,.1f} gigapixels of slides" if has_size else "")
    table = Table(caption=caption)
    for label in [*columns.values(), *(["slide (px)", "MPix"] if has_size else [])]:
        # ids and sizes are what people copy: never cut or fold them
        whole = label in ("id", "slide (px)", "MPix", "spots")
        table.add_column(label, justify="right" if label in ("spots", "MPix") else "left", no_wrap=whole)
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = ["" if _missing(row[c]) else str(row[c]) for c in columns]
        if has_size:
            cells += [f"{row['fullres_px_width']} x {row['fullres_px_height']}", f"{mpix.iloc[i]:,.0f}"]
        table.add_row(*cells)
    # piped output is not cut to 80 columns
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


# --------------------------------------------------------------------------------------------- download


@click.command("download")
@click.option(
    "-o", "--out", "hest_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="HEST folder."
)
@click.option("--id", "sample_ids", multiple=True, help="Sample id to download (repeatable).")
@filter_options
@click.option(
    "--parts",
    multiple=True,
    help="Hub folders to fetch, comma separated: wsis, st, metadata, patches, cellvit_seg, tissue_seg, xenium_seg, "
    "transcripts, thumbnails, spatial_plots, pixel_size_vis, patches_vis. [default: the files conversion reads]",
)
@click.option("--all", "everything", is_flag=True, help="Download every sample (~1.9 TB) when no --id or filter.")
@click.option(
    "--catalog",
    "catalog_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Local catalog CSV for the filters. [default: the newest on the hub]",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def download_command(
    hest_dir: Path,
    sample_ids: tuple[str, ...],
    parts: tuple[str, ...],
    everything: bool,
    catalog_csv: Path | None,
    quiet: bool,
    **filters: Any,
) -> None:
    """Download HEST-1k samples from the Hugging Face Hub into HEST_DIR (resumes; complete files are skipped).

    The dataset is gated: accept its terms at https://huggingface.co/datasets/MahmoodLab/hest and set HF_TOKEN.
    """
    from hest_spatialdata.hub import PARTS, HubError, SampleDownload, download

    selection = filters_of(filters)
    if not (sample_ids or selection or everything):
        raise click.UsageError("choose samples with --id or a filter, or pass --all for the whole dataset (~1.9 TB)")
    wanted_parts = [p.strip() for value in parts for p in value.split(",") if p.strip()] or None
    unknown = sorted(set(wanted_parts or ()) - set(PARTS))
    if unknown:
        raise click.BadParameter(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    total = []

    def report(done: SampleDownload) -> None:
        total.append(done.nbytes)
        click.echo(f"✓ {done.sample_id}: {len(done.files)} files, {done.nbytes / 1e6:,.1f} MB")

    try:
        download(
            hest_dir,
            sample_ids or None,
            parts=wanted_parts,
            catalog_source=catalog_csv,
            progress=not quiet,
            on_sample=report,
            **selection,
        )
    except HubError as e:
        fail(str(e))
    click.echo(f"{len(total)} samples, {sum(total) / 1e9:,.2f} GB in {hest_dir}")


# --------------------------------------------------------------------------------------------- validate


@click.command("validate")
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--against",
    "hest_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="HEST folder the stores were converted from: also check pixels, spots, tables and metadata against it.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the reports.")
def validate_command(stores: tuple[Path, ...], hest_dir: Path | None, json_path: Path | None) -> None:
    """Validate stores: structure, and with --against their fidelity to the HEST source. Exit 1 if any is invalid."""
    from rich.console import Console

    from hest_spatialdata.validate import validate

    console = Console()
    reports = []
    for store in stores:
        report = validate(store, hest_dir)
        reports.append(report)
        console.print(report.table())
    if json_path is not None:
        json_path.write_text(json.dumps([r.to_dict() for r in reports], indent=2), encoding="utf-8")
    invalid = [r for r in reports if not r.ok]
    for report in invalid:
        for check in report.failures:
            click.secho(f"invalid: {report.store}: {check.name}: {check.detail}", fg="red", err=True)
    if invalid:
        sys.exit(1)


# --------------------------------------------------------------------------------------------- convert


def convert_batch(
    hest_dir: Path,
    out_dir: Path,
    sample_ids: tuple[str, ...],
    *,
    elements: list[str] | None,
    overwrite: bool,
    chunk_size: int | None,
    quiet: bool,
    workers: int | None,
    scheduler: str | None,
    from_hub: bool,
    delete_downloaded: bool,
    everything: bool,
    catalog_csv: Path | None,
    summary_path: Path | None,
    threads: int | None,
    memory_limit: str,
    filters: dict[str, tuple[str, ...]],
) -> None:
    """Run ``convert`` as a batch: skip complete stores, record failures, print (and write) a summary.

    Exits 1 if any sample failed.
    """
    from hest_spatialdata._progress import new_progress
    from hest_spatialdata.batch import run_batch

    if workers and scheduler:
        raise click.UsageError("--workers and --scheduler exclude each other")
    if delete_downloaded and not from_hub:
        raise click.UsageError("--delete-downloaded only applies with --from-hub")
    ids, hub_files, commit = _select(hest_dir, sample_ids, from_hub, everything, catalog_csv, filters, elements)
    if not ids:
        fail(f"no sample selected in {'the catalog' if from_hub else hest_dir}")
    with new_progress(disable=quiet) as progress:
        bar = progress.add_task("samples", total=len(ids))

        def report(result: SampleResult) -> None:
            progress.console.print(_result_line(result), highlight=False)
            progress.advance(bar)

        summary = run_batch(
            hest_dir,
            out_dir,
            ids,
            workers=workers or 1,
            scheduler=scheduler,
            overwrite=overwrite,
            elements=elements,
            chunk_size=chunk_size,
            threads=threads,
            memory_limit=memory_limit,
            hub_files=hub_files,
            hub_commit=commit,
            delete_downloaded=delete_downloaded,
            on_result=report,
            progress=progress,
        )
    _print_summary(summary, summary_path)
    if not summary.ok:
        sys.exit(1)


def _select(
    hest_dir: Path,
    sample_ids: tuple[str, ...],
    from_hub: bool,
    everything: bool,
    catalog_csv: Path | None,
    filters: dict[str, tuple[str, ...]],
    elements: list[str] | None,
) -> tuple[list[str], dict[str, dict[str, int]] | None, str | None]:
    from hest_spatialdata.batch import plan_from_hub, select_local_ids

    if not from_hub:
        if not hest_dir.is_dir():
            raise click.BadParameter(f"Directory '{hest_dir}' does not exist.", param_hint="'HEST_DIR'")
        return select_local_ids(hest_dir, sample_ids, **filters), None, None
    if not (sample_ids or filters or everything):
        raise click.UsageError("with --from-hub, choose samples with --id or a filter, or pass --all")
    from hest_spatialdata.errors import HestInputError
    from hest_spatialdata.hub import HubError

    try:
        commit, files = plan_from_hub(sample_ids or None, elements=elements, catalog_source=catalog_csv, **filters)
    except (HubError, HestInputError) as e:
        fail(str(e))
    size = sum(sum(f.values()) for f in files.values())
    click.echo(f"{len(files)} samples selected on the hub ({size / 1e9:,.2f} GB to download)")
    return list(files), files, commit


def _result_line(result: SampleResult) -> str:
    if result.status == "done":
        took = f"{result.seconds:.1f} s" + (
            f" + {result.download_seconds:.1f} s download" if result.download_seconds else ""
        )
        return f"[green]✓[/green] {result.sample_id} → {result.store} ({took})"
    if result.status == "skipped":
        return f"[cyan]↷[/cyan] {result.sample_id}: skipped, {result.reason}"
    return f"[red]✗ {result.sample_id}: failed:[/red] {result.reason}"


def _print_summary(summary: BatchSummary, path: Path | None) -> None:
    from rich.console import Console

    Console().print(summary.table())
    if path is not None:
        summary.write_json(path)
        click.echo(f"summary written to {path}")
