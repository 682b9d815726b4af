"""The ``hest-to-sdata`` command line (also ``python -m hest_spatialdata``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hest_spatialdata._cli_scale import (
    convert_batch,
    download_command,
    filter_options,
    filters_of,
    list_command,
    validate_command,
)
from hest_spatialdata._constants import Elements
from hest_spatialdata._version import __version__

ELEMENT_NAMES = [e.value for e in Elements]


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


def _split_elements(values: tuple[str, ...]) -> list[str] | None:
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ELEMENT_NAMES))
    if unknown:
        raise click.BadParameter(f"unknown element(s) {', '.join(unknown)}; choose from {', '.join(ELEMENT_NAMES)}")
    return names or None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hest-to-sdata")
def main() -> None:
    """HEST-1k samples as SpatialData Zarr stores: convert, download, list, validate, look."""


@main.command()
@click.argument("hest_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder; each sample becomes OUT/{id}.zarr.",
)
@click.option("--id", "sample_ids", multiple=True, help="Sample id to convert (repeatable). [default: all samples]")
@click.option(
    "--elements",
    "elements",
    multiple=True,
    help=f"Elements to write, comma separated (repeatable): {', '.join(ELEMENT_NAMES)}. [default: all]",
)
@click.option("--overwrite", is_flag=True, help="Replace existing stores (only once the new store is complete).")
@click.option(
    "--chunk-size",
    type=click.IntRange(256),
    default=None,
    help="Image chunk side in pixels, a multiple of 256. [default: 2048]",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@filter_options
@click.option("--workers", type=click.IntRange(1), default=None, help="Batch on N local worker processes.")
@click.option("--scheduler", metavar="ADDRESS", help="Batch on a dask.distributed cluster (workers with --nthreads 1).")
@click.option("--from-hub", is_flag=True, help="Download each sample into HEST_DIR (a staging folder) first.")
@click.option("--delete-downloaded", is_flag=True, help="With --from-hub: delete a sample's files once converted.")
@click.option("--all", "everything", is_flag=True, help="With --from-hub and no --id or filter: every sample.")
@click.option(
    "--catalog",
    "catalog_csv",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Local catalog CSV for --from-hub filters. [default: the newest on the hub]",
)
@click.option(
    "--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON summary."
)
@click.option("--threads", type=click.IntRange(1), default=None, help="Threads writing one sample. [default: cores/N]")
@click.option("--memory-limit", default="auto", show_default=True, help="Memory limit of each local worker.")
def convert(
    hest_dir: Path,
    out_dir: Path,
    sample_ids: tuple[str, ...],
    elements: tuple[str, ...],
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
    **filters: tuple[str, ...],
) -> None:
    """Convert HEST samples from HEST_DIR into SpatialData Zarr stores.

    Runs as a resumable batch: complete stores are skipped (replaced with --overwrite), a failing sample does not
    stop the others, and a summary is printed; the exit code is 1 if any sample failed.
    """
    convert_batch(
        hest_dir, out_dir, sample_ids, elements=_split_elements(elements), overwrite=overwrite, chunk_size=chunk_size,
        quiet=quiet, workers=workers, scheduler=scheduler, from_hub=from_hub, delete_downloaded=delete_downloaded,
        everything=everything, catalog_csv=catalog_csv, summary_path=summary_path, threads=threads,
        memory_limit=memory_limit, filters=filters_of(filters),
    )  # fmt: skip


@main.command()
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("hest_demo"),
    show_default=True,
    help="Folder for the example HEST sample and its store.",
)
@click.option("--overwrite", is_flag=True, help="Rebuild the example and its store if present.")
def demo(out_dir: Path, overwrite: bool) -> None:
    """Build the small example HEST sample, convert it, and show how to open it."""
    from hest_spatialdata._progress import new_progress
    from hest_spatialdata.store import convert_sample, store_path
    from hest_spatialdata.testing import EXAMPLE_SAMPLE_ID, example_sample

    hest_dir = out_dir / "hest"
    click.echo(f"Writing the example HEST sample {EXAMPLE_SAMPLE_ID} to {hest_dir} ...")
    example_sample(hest_dir, overwrite=overwrite)
    store = store_path(out_dir, EXAMPLE_SAMPLE_ID)
    if store.exists() and not overwrite:
        click.echo(f"{store} exists (use --overwrite to rebuild it).")
    else:
        with new_progress() as progress:
            convert_sample(hest_dir, EXAMPLE_SAMPLE_ID, out_dir, overwrite=overwrite, progress=progress)
    click.echo(summarize_store(store))


def summarize_store(store: Path) -> str:
    """A human summary of a store: its elements and how to open it."""
    import spatialdata as sd

    sdata = sd.read_zarr(store)
    lines = [f"\nSpatialData store: {store}", ""]
    for kind, elements in (("images", sdata.images), ("shapes", sdata.shapes), ("points", sdata.points)):
        for name, element in elements.items():
            lines.append(f"  {kind[:-1]:6s} {name:18s} {_describe(element)}")
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
    if hasattr(element, "children"):  # multiscale image
        shapes = [tuple(element[k]["image"].shape) for k in element.children]
        return f"{len(shapes)} levels, level 0 {shapes[0]} (c, y, x)"
    if hasattr(element, "geom_type"):
        kinds = ", ".join(sorted(set(element.geom_type)))
        return f"{len(element)} {kinds}"
    return f"{len(element)} points" if hasattr(element, "npartitions") else type(element).__name__


@main.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="PNG to write."
)
@click.option("--gene", default=None, help="Gene colouring the spots. [default: the most expressed]")
@click.option(
    "--coordinate-system",
    type=click.Choice(["global", "microns"]),
    default="global",
    show_default=True,
    help="global: level-0 slide pixels; microns: µm.",
)
def plot(store: Path, out: Path, gene: str | None, coordinate_system: str) -> None:
    """Quick-look PNG of STORE: H&E, spots coloured by a gene, nuclei by class (needs hest-spatialdata[plot])."""
    import matplotlib

    matplotlib.use("Agg")
    from hest_spatialdata.plot import quicklook

    try:
        path = quicklook(store, out, gene=gene, coordinate_system=coordinate_system)
    except KeyError as e:
        _fail(str(e.args[0]))
    click.echo(f"wrote {path}")


main.add_command(list_command)
main.add_command(download_command)
main.add_command(validate_command)
