"""The ``hest-to-sdata`` command line (also ``python -m hest_spatialdata``): the group :func:`main`.

Light to import: the commands load spatialdata, the hub, the batch and validation modules when they run.

Modules: :mod:`~hest_spatialdata.cli._options` (the options the commands share), :mod:`~hest_spatialdata.cli.convert`
(``convert``, ``demo``), :mod:`~hest_spatialdata.cli.catalog` (``list``, ``download``),
:mod:`~hest_spatialdata.cli.stores` (``validate``, ``plot``), :mod:`~hest_spatialdata.cli.look` (``thumbnail``) and
:mod:`~hest_spatialdata.cli.cohort` (``cohort``), :mod:`~hest_spatialdata.cli.bench` (``embed``, ``benchmark``) and
:mod:`~hest_spatialdata.cli.tenx` (``import``: 10x runs).
"""

from __future__ import annotations

import click

from hest_spatialdata._version import __version__
from hest_spatialdata.cli.bench import benchmark_command, embed_command
from hest_spatialdata.cli.catalog import download_command, list_command
from hest_spatialdata.cli.cohort import cohort_command
from hest_spatialdata.cli.convert import convert_command, demo_command
from hest_spatialdata.cli.look import thumbnail_command
from hest_spatialdata.cli.stores import plot_command, validate_command
from hest_spatialdata.cli.tenx import import_command

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hest-to-sdata")
def main() -> None:
    """HEST-1k samples as SpatialData Zarr stores: convert, download, list, validate, look, cohorts, benchmark."""


_COMMANDS = (convert_command, demo_command, list_command, download_command, validate_command, plot_command)
for _command in (*_COMMANDS, import_command, thumbnail_command, cohort_command, embed_command, benchmark_command):
    main.add_command(_command)
