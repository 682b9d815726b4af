"""Commands reading converted stores: ``validate`` and ``plot``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hest_spatialdata.cli._options import LocationType, fail, out_option, storage_option


@click.command("validate")
@click.argument("stores", nargs=-1, required=True, type=LocationType())
@click.option(
    "--against",
    "hest_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="HEST folder the stores were converted from: also check pixels, spots, tables and metadata against it.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the reports.")
@storage_option
def validate_command(
    stores: tuple[Path | str, ...],
    hest_dir: Path | None,
    json_path: Path | None,
    storage_options: dict[str, Any] | None,
) -> None:
    """Validate stores: structure, and with --against their fidelity to the HEST source. Exit 1 if any is invalid.

    A store may be a URL (s3://bucket/prefix/ID.zarr).
    """
    from rich.console import Console

    from hest_spatialdata.storage.locations import access_message
    from hest_spatialdata.validate import validate

    console = Console()
    reports = []
    for store in stores:
        try:
            report = validate(store, hest_dir, storage_options=storage_options)
        except PermissionError as e:  # a bucket without permission: one line, not a traceback
            fail(access_message(e, store) or str(e))
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


@click.command("plot")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=Path))
@out_option("out", "PNG to write.", folder=False)
@click.option("--gene", default=None, help="Gene colouring the spots. [default: the most expressed]")
@click.option(
    "--coordinate-system",
    type=click.Choice(["global", "microns"]),
    default="global",
    show_default=True,
    help="global: level-0 slide pixels; microns: µm.",
)
def plot_command(store: Path, out: Path, gene: str | None, coordinate_system: str) -> None:
    """Quick-look PNG of STORE: H&E, spots coloured by a gene, nuclei by class (needs hest-spatialdata[plot])."""
    import matplotlib

    matplotlib.use("Agg")
    from hest_spatialdata.views.plot import quicklook

    try:
        path = quicklook(store, out, gene=gene, coordinate_system=coordinate_system)
    except KeyError as e:
        fail(str(e.args[0]))
    click.echo(f"wrote {path}")
