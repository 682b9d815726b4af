"""``thumbnail``: a coarse level of a sample's slide with its spots, from the hub (or any HEST root)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hest_spatialdata.cli._options import fail, hest_root_argument, out_option, storage_option

DEFAULT_ROOT = "hf://datasets/MahmoodLab/hest"


@click.command("thumbnail")
@click.argument("sample_id")
@out_option("out", "PNG to write.", folder=False)
@click.option(
    "--root",
    "hest_dir",
    default=DEFAULT_ROOT,
    show_default=True,
    callback=hest_root_argument,
    help="HEST root: hf://datasets/MahmoodLab/hest[@REVISION], another fsspec URL, or a local folder; or a "
    "converted store / folder of stores, local or a URL (s3://bucket/prefix).",
)
@click.option("--no-spots", is_flag=True, help="The slide alone.")
@click.option(
    "--min-side",
    type=click.IntRange(0),
    default=1000,
    show_default=True,
    help="Draw the coarsest level at least this many px on its longer side (0: the coarsest level).",
)
@storage_option
def thumbnail_command(
    sample_id: str,
    out: Path,
    hest_dir: Path | str,
    no_spots: bool,
    min_side: int,
    storage_options: dict[str, Any] | None,
) -> None:
    """PNG of SAMPLE_ID's slide at a coarse level (see --min-side), with the spots drawn.

    From the hub only the TIFF header, that level's tiles, the metadata and the st h5ad are fetched.
    """
    from hest_spatialdata.errors import HestInputError
    from hest_spatialdata.roots.hub import HubError
    from hest_spatialdata.roots.remote import RemoteReadError
    from hest_spatialdata.storage.locations import access_message
    from hest_spatialdata.views.thumbnail import slide_thumbnail

    try:
        path = slide_thumbnail(
            hest_dir, sample_id, out, spots=not no_spots, min_side=min_side, storage_options=storage_options
        )
    except (HestInputError, HubError, RemoteReadError) as e:
        fail(str(e))
    except PermissionError as e:  # a bucket without permission
        fail(access_message(e, hest_dir) or str(e))
    click.echo(f"wrote {path}")
