"""``convert`` (HEST samples to SpatialData stores, as a resumable batch) and ``demo`` (the example, converted)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hest_spatialdata.cli._options import (
    check_writable,
    convert_options,
    convert_options_of,
    fail,
    filters_of,
    hest_root_argument,
    id_option,
    out_option,
)

if TYPE_CHECKING:
    from hest_spatialdata.conversion.batch import BatchSummary, ConvertOptions, HubPlan, SampleResult


@click.command("convert")
@click.argument("hest_dir", callback=hest_root_argument)
@out_option("out_dir", "Output folder or URL (s3://bucket/prefix); each sample becomes OUT/{id}.zarr.", url=True)
@id_option("Sample id to convert (repeatable). [default: all samples]")
@convert_options
def convert_command(
    hest_dir: Path | str,
    out_dir: Path | str,
    sample_ids: tuple[str, ...],
    quiet: bool,
    everything: bool,
    summary_path: Path | None,
    **values: Any,
) -> None:
    """Convert HEST samples from HEST_DIR into SpatialData Zarr stores.

    HEST_DIR is a folder, or a remote HEST root read without a local copy of the slides:
    hf://datasets/MahmoodLab/hest[@REVISION] (HF_TOKEN or `hf auth login`) or another fsspec URL.

    Runs as a resumable batch: complete stores are skipped (replaced with --overwrite), a failing sample does not
    stop the others, and a summary is printed; the exit code is 1 if any sample failed.

    OUT may be any fsspec URL (s3://, gs://, az:// ...): each store is written locally, then uploaded with its root
    zarr.json last, so it lands complete or not at all (docs/object_storage.md).
    """
    from rich.console import Console

    from hest_spatialdata.errors import HestInputError
    from hest_spatialdata.roots.hub import HubError
    from hest_spatialdata.roots.remote import RemoteReadError

    options = convert_options_of(values)
    filters = filters_of(values)
    if isinstance(hest_dir, str) and options.from_hub:
        raise click.UsageError("--from-hub downloads into a local HEST_DIR; a remote HEST_DIR is read directly")
    if not options.from_hub and isinstance(hest_dir, Path) and not hest_dir.is_dir():
        raise click.BadParameter(f"Directory '{hest_dir}' does not exist.", param_hint="'HEST_DIR'")
    if options.from_hub and not (sample_ids or filters or everything):
        raise click.UsageError("with --from-hub, choose samples with --id or a filter, or pass --all")
    if isinstance(hest_dir, str) and not (sample_ids or filters or everything):
        raise click.UsageError("with a remote HEST_DIR, choose samples with --id or a filter, or pass --all")
    check_writable(out_dir, options.storage_options)
    try:
        summary = _run(hest_dir, out_dir, sample_ids, options, filters, quiet=quiet)
    except (HestInputError, HubError, RemoteReadError) as e:
        fail(str(e))
    Console().print(summary.table())
    if summary_path is not None:
        summary.write_json(summary_path)
        click.echo(f"summary written to {summary_path}")
    if not summary.ok:
        sys.exit(1)


def _run(
    hest_dir: Path | str,
    out_dir: Path | str,
    sample_ids: tuple[str, ...],
    options: ConvertOptions,
    filters: dict[str, tuple[str, ...]],
    *,
    quiet: bool,
) -> BatchSummary:
    """Select and convert the samples with :func:`hest_spatialdata.conversion.convert`: a line and a tick a sample."""
    from hest_spatialdata._progress import new_progress
    from hest_spatialdata.conversion import convert as conversion

    with new_progress(disable=quiet) as progress:
        bar = progress.add_task("samples", total=None)  # the count is known once the samples are selected

        def report(result: SampleResult) -> None:
            progress.console.print(_result_line(result), highlight=False)
            progress.advance(bar)

        def selected(ids: list[str], plan: HubPlan | None) -> None:
            progress.update(bar, total=len(ids))
            if plan is not None:
                size = sum(sum(files.values()) for files in plan.files.values())
                progress.console.print(f"{len(ids)} samples selected on the hub ({size / 1e9:,.2f} GB to download)")

        try:
            summary = conversion.convert(
                hest_dir,
                out_dir,
                sample_ids,
                options=options,
                on_selected=selected,
                on_result=report,
                progress=progress,
                raise_on_failure=False,
                **filters,
            )
        except Exception:
            progress.remove_task(bar)  # no empty bar above the error
            raise
        progress.update(bar, total=len(summary.results))
    return summary


def _result_line(result: SampleResult) -> str:
    if result.status == "done":
        took = f"{result.seconds:.1f} s" + (
            f" + {result.download_seconds:.1f} s download" if result.download_seconds else ""
        )
        return f"[green]✓[/green] {result.sample_id} → {result.store} ({took})"
    if result.status == "skipped":
        return f"[cyan]↷[/cyan] {result.sample_id}: skipped, {result.reason}"
    return f"[red]✗ {result.sample_id}: failed:[/red] {result.reason}"


@click.command("demo")
@out_option(
    "out_dir", "Folder for the example HEST sample and its store.", default=Path("hest_demo"), show_default=True
)
@click.option("--overwrite", is_flag=True, help="Rebuild the example and its store if present.")
def demo_command(out_dir: Path, overwrite: bool) -> None:
    """Build the small example HEST sample, convert it, and show how to open it."""
    import hest_spatialdata
    from hest_spatialdata._progress import new_progress
    from hest_spatialdata.example import EXAMPLE_SAMPLE_ID, example_sample
    from hest_spatialdata.storage.store import store_path

    hest_dir = out_dir / "hest"
    click.echo(f"Writing the example HEST sample {EXAMPLE_SAMPLE_ID} to {hest_dir} ...")
    example_sample(hest_dir, overwrite=overwrite)
    store = store_path(out_dir, EXAMPLE_SAMPLE_ID)
    if store.exists() and not overwrite:
        click.echo(f"{store} exists (use --overwrite to rebuild it).")
    else:
        try:
            with new_progress() as progress:
                hest_spatialdata.convert(hest_dir, out_dir, [EXAMPLE_SAMPLE_ID], overwrite=overwrite, progress=progress)
        except hest_spatialdata.ConversionError as e:
            fail(str(e))
    click.echo(summarize_store(store))


def summarize_store(store: Path) -> str:
    """A human summary of a store: its elements and how to open it."""
    import spatialdata as sd

    sdata = sd.read_zarr(store)
    lines = [f"\nSpatialData store: {store}", ""]
    kinds = (("images", sdata.images), ("labels", sdata.labels), ("shapes", sdata.shapes), ("points", sdata.points))
    for kind, elements in kinds:
        for name, element in elements.items():
            lines.append(f"  {kind.rstrip('s'):6s} {name:18s} {_describe(element)}")
    for name, table in sdata.tables.items():
        lines.append(f"  table  {name:18s} {table.n_obs} x {table.n_vars} (obs x var)")
    lines.append(f"  coordinate systems: {', '.join(sdata.coordinate_systems)}")
    lines += [
        "",
        "Open it:",
        f"  python -c \"import spatialdata as sd; print(sd.read_zarr('{store}'))\"",
        f"  napari {store} --plugin hest-spatialdata      # needs hest-spatialdata[napari]",
    ]
    return "\n".join(lines)


def _describe(element: object) -> str:
    if hasattr(element, "children"):  # multiscale image or labels
        levels = [next(iter(element[k].data_vars.values())) for k in element.children]
        return f"{len(levels)} levels, level 0 {tuple(levels[0].shape)} ({', '.join(map(str, levels[0].dims))})"
    if hasattr(element, "geom_type"):
        kinds = ", ".join(sorted(set(element.geom_type)))
        return f"{len(element)} {kinds}"
    return f"{len(element)} points" if hasattr(element, "npartitions") else type(element).__name__
