"""Options shared by the ``hest-to-sdata`` commands, as click decorators, and what the commands make of them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from hest_spatialdata._constants import Elements
from hest_spatialdata.source.filters import FILTER_COLUMNS, FILTER_HELP
from hest_spatialdata.source.layout import BENCH_TASKS

if TYPE_CHECKING:
    from hest_spatialdata.conversion.batch import ConvertOptions

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

ELEMENT_NAMES = [e.value for e in Elements]


def fail(message: str) -> NoReturn:
    """Print an error in red on stderr and exit with code 1."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


def stack(*decorators: Decorator) -> Decorator:
    """One decorator applying ``decorators``; the first is the first option shown by ``--help``."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def split_choices(kind: str, choices: Iterable[str]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback splitting a repeatable, comma-separated option into its values (``None`` if none).

    Parameters
    ----------
    kind
        What a value is, for the error message (``element``, ``part``).
    choices
        The allowed values; another value is a :class:`click.BadParameter` naming them.
    """
    allowed = list(choices)

    def split(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[str] | None:
        names = [name.strip() for value in values for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - set(allowed))
        if unknown:
            raise click.BadParameter(f"unknown {kind}(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
        return names or None

    return split


def filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the catalog filters of :data:`hest_spatialdata.source.filters.FILTER_COLUMNS` (``--organ``, ...)."""
    for name in reversed(FILTER_COLUMNS):
        flag = f"--{name.replace('_', '-')}"
        text = f"{FILTER_HELP[name]} Repeatable or comma separated."
        checked = {"callback": split_choices("task", BENCH_TASKS)} if name == "bench_task" else {}
        command = click.option(flag, name, multiple=True, help=text, **checked)(command)
    return command


def filters_of(values: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The catalog filters given on the command line, by name."""
    return {name: values[name] for name in FILTER_COLUMNS if values.get(name)}


def hest_root_argument(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | str | None:
    """A HEST root argument: a remote URL (``hf://...``) stays a string, anything else is a local :class:`Path`."""
    from hest_spatialdata.roots.remote import is_remote

    if value is None or is_remote(value):
        return value
    return Path(value)


def id_option(text: str) -> Decorator:
    """``--id``: sample ids (repeatable), as ``sample_ids``."""
    return click.option("--id", "sample_ids", multiple=True, help=text)


def catalog_option(text: str) -> Decorator:
    """``--catalog``: a local catalog CSV, as ``catalog_source``."""
    path = click.Path(exists=True, dir_okay=False, path_type=Path)
    return click.option("--catalog", "catalog_source", type=path, help=text)


def all_option(text: str) -> Decorator:
    """``--all``: every sample when no id or filter is given, as ``everything``."""
    return click.option("--all", "everything", is_flag=True, help=text)


def out_option(dest: str, text: str, *, folder: bool = True, url: bool = False, **kwargs: Any) -> Decorator:
    """``-o/--out``: a folder (or with ``folder=False`` a file), required unless given a ``default``.

    With ``url``, a URL (``s3://bucket/prefix``) is accepted too and stays a string.
    """
    kwargs.setdefault("required", "default" not in kwargs)
    path = click.Path(file_okay=not folder, dir_okay=folder, path_type=Path)
    return click.option("-o", "--out", dest, type=LocationType(path) if url else path, help=text, **kwargs)


class LocationType(click.ParamType):
    """A local path (checked by ``local``) or an fsspec URL, kept as a string."""

    name = "path_or_url"

    def __init__(self, local: click.ParamType | None = None) -> None:
        self.local = local or click.Path(path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from hest_spatialdata.storage.locations import is_url

        if isinstance(value, str) and is_url(value):
            return value
        return self.local.convert(value, param, ctx)


def _storage_options(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, Any] | None:
    from hest_spatialdata.storage.locations import parse_storage_options

    try:
        return parse_storage_options(values) or None
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


#: ``--storage-option key=value`` (repeatable): fsspec options of URL stores, as ``storage_options``.
storage_option = click.option(
    "--storage-option",
    "storage_options",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_storage_options,
    help="fsspec option of a URL store (repeatable; dotted keys nest: client_kwargs.endpoint_url=...). "
    "Credentials otherwise come from the environment or profiles.",
)


quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")

#: The options of ``convert`` after HEST_DIR, ``--out`` and ``--id``: those of
#: :class:`~hest_spatialdata.conversion.batch.ConvertOptions` (see :func:`convert_options_of`), the filters,
#: ``--quiet``, ``--all`` and ``--summary``.
convert_options = stack(
    click.option(
        "--elements",
        multiple=True,
        callback=split_choices("element", ELEMENT_NAMES),
        help=f"Elements to write, comma separated (repeatable): {', '.join(ELEMENT_NAMES)}. [default: all]",
    ),
    click.option("--overwrite", is_flag=True, help="Replace existing stores (only once the new store is complete)."),
    click.option(
        "--chunk-size",
        type=click.IntRange(256),
        default=None,
        help="Image chunk side in pixels, a multiple of 256. [default: 1024]",
    ),
    quiet_option,
    filter_options,
    click.option("--workers", type=click.IntRange(1), default=None, help="Batch on N local worker processes."),
    click.option(
        "--scheduler", metavar="ADDRESS", help="Batch on a dask.distributed cluster (workers with --nthreads 1)."
    ),
    click.option("--from-hub", is_flag=True, help="Download each sample into HEST_DIR (a staging folder) first."),
    click.option("--delete-downloaded", is_flag=True, help="With --from-hub: delete a sample's files once converted."),
    all_option("With --from-hub or a remote HEST_DIR and no --id or filter: every sample."),
    catalog_option("Local catalog CSV for --from-hub filters. [default: the newest on the hub]"),
    click.option(
        "--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a JSON summary."
    ),
    click.option(
        "--threads", type=click.IntRange(1), default=None, help="Threads writing one sample. [default: cores/N]"
    ),
    click.option("--memory-limit", default="auto", show_default=True, help="Memory limit of each local worker."),
    storage_option,
)


def convert_options_of(values: Mapping[str, Any]) -> ConvertOptions:
    """The one :class:`~hest_spatialdata.conversion.batch.ConvertOptions` set by the parsed :data:`convert_options`.

    Parameters
    ----------
    values
        The command's parsed parameters; those named like a field of ``ConvertOptions`` are used.

    Raises
    ------
    click.UsageError
        For ``--workers`` with ``--scheduler``, or ``--delete-downloaded`` without ``--from-hub``.
    """
    from hest_spatialdata.conversion.batch import ConvertOptions

    if values.get("workers") and values.get("scheduler"):
        raise click.UsageError("--workers and --scheduler exclude each other")
    if values.get("delete_downloaded") and not values.get("from_hub"):
        raise click.UsageError("--delete-downloaded only applies with --from-hub")
    given = {f.name: values[f.name] for f in fields(ConvertOptions) if f.name in values}
    return ConvertOptions(**{**given, "workers": given.get("workers") or 1})


def check_writable(location: Path | str, storage_options: Mapping[str, Any] | None) -> None:
    """Exit with one message if a URL output cannot be written (no credentials, no permission on the bucket).

    A probe object ``.hest-write-check`` is written and removed, before any sample is converted.
    """
    from hest_spatialdata.storage.locations import access_message, is_url, locate

    if not is_url(location):
        return
    probe = locate(location, storage_options) / ".hest-write-check"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except Exception as e:  # noqa: BLE001 - an access refusal is reported as one line, anything else as itself
        fail(access_message(e, location) or f"cannot write to {location}: {type(e).__name__}: {e}")
