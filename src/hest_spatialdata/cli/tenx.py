"""``import``: a 10x run (Visium, Visium HD, Xenium) into a store in the HEST contract."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hest_spatialdata.cli._options import (
    ELEMENT_NAMES,
    check_writable,
    fail,
    out_option,
    split_choices,
    storage_option,
)

if TYPE_CHECKING:
    from hest_spatialdata.storage.locations import StoreLocation

_file = click.Path(exists=False, dir_okay=False, path_type=Path)
METADATA_OPTION = "--metadata"


def spread_values(args: list[str], option: str) -> list[str]:
    """``--metadata a=1 b=2`` as ``--metadata a=1 --metadata b=2``: the KEY=VALUE words after the option are its.

    A word stops the run when it starts with ``-`` or holds no ``=`` (the PATH argument, another option).
    """
    spread: list[str] = []
    taking, position = False, 0
    while position < len(args):
        arg = args[position]
        if arg == "--":
            return spread + args[position:]
        if arg == option and position + 1 < len(args):  # the option and its first value, as click reads them
            spread += args[position : position + 2]
            taking, position = True, position + 2
            continue
        if taking and not arg.startswith("-") and "=" in arg:
            spread += [option, arg]
        else:
            taking = arg.startswith(option + "=")
            spread.append(arg)
        position += 1
    return spread


class _SpreadMetadata(click.Command):
    """``import``: ``--metadata`` takes several KEY=VALUE words at once (:func:`spread_values`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_values(list(args), METADATA_OPTION))


def _metadata(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any]:
    from hest_spatialdata.tenx._common import parse_metadata_items

    try:
        return parse_metadata_items(values)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command("import", cls=_SpreadMetadata)
@click.argument("path", type=click.Path(path_type=Path), required=False)
@out_option("out_dir", "Output folder or URL (s3://bucket/prefix); the run becomes OUT/{ID}.zarr.", url=True)
@click.option("--id", "sample_id", help="Sample id of the store (OUT/{ID}.zarr) and in cohorts. [required with PATH]")
@click.option(
    "--sheet",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Instead of PATH: a CSV of runs (columns id, path, image, alignment, nuclei, and metadata columns), "
    "imported as a batch like convert's (resumable, a summary, --workers).",
)
@click.option("--workers", type=click.IntRange(1), default=None, help="With --sheet: runs on N local processes.")
@click.option("--image", type=_file, help="Full-resolution H&E (TIFF, OME-TIFF, SVS). [default: the largest found]")
@click.option("--alignment", type=_file, help="Visium: Loupe alignment JSON; Xenium: Xenium Explorer alignment CSV.")
@click.option("--nuclei", type=_file, help="Nuclei on the H&E: CellViT GeoJSON (HEST's), any polygon GeoJSON.")
@click.option(
    METADATA_OPTION,
    "metadata",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_metadata,
    help='Sample metadata for cohort filters and folds (repeatable): organ=Bowel species="Homo sapiens" patient=P1.',
)
@click.option(
    "--elements",
    multiple=True,
    callback=split_choices("element", ELEMENT_NAMES),
    help="Elements to write, comma separated (repeatable). [default: all]",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing store (only once the new store is complete).")
@click.option("--chunk-size", type=click.IntRange(256), default=None, help="Image chunk side in px. [default: 1024]")
@click.option("--threads", type=click.IntRange(1), default=None, help="Threads writing the store. [default: cores]")
@storage_option
def import_command(
    path: Path | None,
    out_dir: Path | str,
    sample_id: str | None,
    sheet: Path | None,
    workers: int | None,
    image: Path | None,
    alignment: Path | None,
    nuclei: Path | None,
    metadata: dict[str, Any],
    elements: list[str] | None,
    overwrite: bool,
    chunk_size: int | None,
    threads: int | None,
    storage_options: dict[str, Any] | None,
) -> None:
    """Import a 10x run at PATH (Space Ranger outs/ or its run folder, Visium HD, Xenium bundle) as OUT/{ID}.zarr.

    The store has exactly the contract of a converted HEST-1k sample (he, spots, table, tissue, patches, nuclei
    with --nuclei), so cohorts, patches, embed, benchmark, validate, plot and napari treat it as one. Nothing is
    written when the input is bad (the message names the file). docs/import.md says what is read from where.
    """
    import dask

    from hest_spatialdata.errors import HestInputError, StoreExistsError
    from hest_spatialdata.storage.locations import StoreLocation
    from hest_spatialdata.tenx import import_10x

    out = StoreLocation.of(out_dir, storage_options)  # parsed once: everything below takes this object
    check_writable(out)
    if sheet is not None:
        if path is not None or sample_id is not None or image or alignment or nuclei or metadata:
            raise click.UsageError("--sheet gives each run's path, id, files and metadata: no PATH, --id, ...")
        batch = {"overwrite": overwrite, "elements": elements, "chunk_size": chunk_size, "threads": threads}
        _import_sheet(sheet, out, workers=workers or 1, **batch)
        return
    if path is None or sample_id is None:
        raise click.UsageError("give PATH and --id (or --sheet)")
    if workers is not None:
        raise click.UsageError("--workers runs the rows of a --sheet side by side")
    start = time.perf_counter()
    try:
        with dask.config.set(scheduler="threads", num_workers=threads):
            store = import_10x(
                path,
                out,
                sample_id,
                image=image,
                alignment=alignment,
                nuclei=nuclei,
                metadata=metadata,
                overwrite=overwrite,
                elements=elements,
                chunk_size=chunk_size,
            )
    except (HestInputError, StoreExistsError) as e:
        fail(str(e))
    click.echo(f"✓ {sample_id} → {store} ({time.perf_counter() - start:.1f} s)")


def _import_sheet(sheet: Path, out_dir: StoreLocation, *, workers: int, **options: Any) -> None:
    """``import --sheet``: the runs as one batch of :func:`hest_spatialdata.conversion.batch.run_batch`."""
    import sys

    from rich.console import Console

    from hest_spatialdata.conversion.batch import ConvertOptions, run_batch
    from hest_spatialdata.errors import HestInputError
    from hest_spatialdata.tenx._common import read_sheet

    try:
        runs = read_sheet(sheet)
    except HestInputError as e:
        fail(str(e))
    elements = tuple(options.pop("elements") or ()) or None
    summary = run_batch(
        "", out_dir, list(runs), ConvertOptions(workers=workers, elements=elements, **options), tenx_runs=runs
    )
    Console().print(summary.table())
    for result in summary.by_status("failed"):  # whole, where the table folds the reason
        click.secho(f"failed: {result.sample_id}: {result.reason}", fg="red", err=True)
    if not summary.ok:
        sys.exit(1)
