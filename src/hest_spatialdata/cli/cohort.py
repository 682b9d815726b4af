"""``cohort``: the table of a set of converted stores (:func:`hest_spatialdata.open_cohort`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from hest_spatialdata.cli._options import fail, filter_options, filters_of, id_option, storage_option

if TYPE_CHECKING:
    import pandas as pd


@click.command("cohort")
@click.argument("stores", nargs=-1, required=True)
@id_option("Sample id (repeatable).")
@filter_options
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@storage_option
def cohort_command(
    stores: tuple[str, ...],
    sample_ids: tuple[str, ...],
    fmt: str,
    storage_options: dict[str, Any] | None,
    **filters: Any,
) -> None:
    """Print the cohort table of STORES: folders of stores, stores or globs (organ, technology, patient, sizes).

    Each may be a URL (s3://bucket/prefix). The filters are those of `list`, applied to each store's own metadata;
    nothing large is read.
    """
    from hest_spatialdata.cohort import open_cohort
    from hest_spatialdata.cohort._table import store_paths
    from hest_spatialdata.errors import HestInputError
    from hest_spatialdata.storage.locations import access_message

    try:
        paths = [path for source in stores for path in store_paths(source, storage_options)]
        cohort = open_cohort(paths, storage_options=storage_options, ids=sample_ids or None, **filters_of(filters))
    except HestInputError as e:
        fail(str(e))
    except OSError as e:
        fail(access_message(e, " ".join(stores)) or f"{type(e).__name__}: {e}")
    table = cohort.table.reset_index()
    if fmt == "csv":
        click.echo(table.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(table.to_json(orient="records", indent=1))
    else:
        _print_table(table)


def _print_table(table: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(caption=f"{len(table)} samples, {table['n_spots'].sum(min_count=1) or 0:,} spots")
    columns = [c for c in table.columns if c != "path"] + ["path"]
    for column in columns:
        numeric = column.startswith("n_") or column == "pixel_size_um"
        view.add_column(column, justify="right" if numeric else "left", no_wrap=column in ("sample_id", "path"))
    for row in table[columns].itertuples(index=False):
        view.add_row(*["" if _missing(value) else str(value) for value in row])
    Console(width=None if sys.stdout.isatty() else 240).print(view)


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


__all__ = ["cohort_command"]
