"""``list`` (the HEST-1k catalog, filtered) and ``download`` (samples from the Hugging Face Hub)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hest_spatialdata.cli._options import (
    all_option,
    catalog_option,
    fail,
    filter_options,
    filters_of,
    id_option,
    out_option,
    quiet_option,
    split_choices,
)
from hest_spatialdata.source.layout import HUB_FOLDERS

if TYPE_CHECKING:
    import pandas as pd

    from hest_spatialdata.roots.hub import SampleDownload

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


@click.command("list")
@id_option("Sample id (repeatable).")
@filter_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@catalog_option("Local catalog CSV (HEST_v1_*_0.csv). [default: the newest on the hub, cached]")
def list_command(sample_ids: tuple[str, ...], fmt: str, catalog_source: Path | None, **filters: Any) -> None:
    """List HEST-1k samples from the catalog (organ, species, technology, oncotree code, size)."""
    from hest_spatialdata.errors import HestInputError
    from hest_spatialdata.roots.hub import HubError, catalog

    try:
        frame = catalog(catalog_source, ids=sample_ids, **filters_of(filters))
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


@click.command("download")
@out_option("hest_dir", "HEST folder.")
@id_option("Sample id to download (repeatable).")
@filter_options
@click.option(
    "--parts",
    multiple=True,
    callback=split_choices("part", HUB_FOLDERS),
    help=f"Hub folders to fetch, comma separated: {', '.join(HUB_FOLDERS)}. [default: the files conversion reads]",
)
@all_option("Download every sample (~1.9 TB) when no --id or filter.")
@catalog_option("Local catalog CSV for the filters. [default: the newest on the hub]")
@quiet_option
def download_command(
    hest_dir: Path,
    sample_ids: tuple[str, ...],
    parts: list[str] | None,
    everything: bool,
    catalog_source: Path | None,
    quiet: bool,
    **filters: Any,
) -> None:
    """Download HEST-1k samples from the Hugging Face Hub into HEST_DIR (resumes; complete files are skipped).

    The dataset is gated: accept its terms at https://huggingface.co/datasets/MahmoodLab/hest and set HF_TOKEN.
    """
    from hest_spatialdata.roots.hub import HubError, download

    selection = filters_of(filters)
    if not (sample_ids or selection or everything):
        raise click.UsageError("choose samples with --id or a filter, or pass --all for the whole dataset (~1.9 TB)")
    total = []

    def report(done: SampleDownload) -> None:
        total.append(done.nbytes)
        click.echo(f"✓ {done.sample_id}: {len(done.files)} files, {done.nbytes / 1e6:,.1f} MB")

    try:
        download(
            hest_dir,
            sample_ids or None,
            parts=parts,
            catalog_source=catalog_source,
            progress=not quiet,
            on_sample=report,
            **selection,
        )
    except HubError as e:
        fail(str(e))
    click.echo(f"{len(total)} samples, {sum(total) / 1e9:,.2f} GB in {hest_dir}")
