"""The one filter language of hest-spatialdata: which samples match ``--organ``, ``--technology``, ...

Pure functions on plain records (a catalog row, a metadata JSON, a store's ``attrs["hest"]``): ``list``,
``download``, batch selection, cohorts and the napari browser all select samples with them, so the same filter
gives the same samples everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from hest_spatialdata.source.layout import BENCH_TASKS
from hest_spatialdata.source.metadata import technology_name

if TYPE_CHECKING:
    import pandas as pd

#: Filters: keyword -> the record keys holding the value, first present wins (catalog / metadata JSON column first,
#: then the normalised column of a catalog frame or a store's attrs).
FILTER_COLUMNS: dict[str, tuple[str, ...]] = {
    "organ": ("organ",),
    "species": ("species",),
    "technology": ("st_technology", "technology"),
    "oncotree": ("oncotree_code",),
    "disease_state": ("disease_state",),
    "bench_task": ("id", "sample_id"),
}
#: What each filter means, for command-line help.
FILTER_HELP = {
    "organ": "Organ, e.g. Breast, Bowel, 'Spinal cord'.",
    "species": "Species: 'Homo sapiens' (human) or 'Mus musculus' (mouse).",
    "technology": "Technology: Visium, 'Visium HD' (incl. 3'), Xenium (incl. 5k), 'Spatial Transcriptomics'.",
    "oncotree": "OncoTree code, e.g. IDC, COAD.",
    "disease_state": "Disease state, e.g. Cancer, Healthy.",
    "bench_task": f"HEST-Benchmark task (its samples): {', '.join(BENCH_TASKS)}.",
}
SPECIES_ALIASES = {"human": "homo sapiens", "mouse": "mus musculus"}
_CANONICAL_TECHNOLOGIES = {"visium", "visium hd", "xenium", "spatial transcriptomics", "st"}


def normalise_filters(
    *, ids: Iterable[str] | str | None = None, **filters: str | Iterable[str] | None
) -> dict[str, list[str]]:
    """Check filter names and turn each filter into a list of values; filters without values are dropped.

    Values may be given as a string, a comma-separated string or an iterable of strings. ``id`` is accepted as an
    alias of ``ids``.

    Raises
    ------
    TypeError
        For an unknown filter name.
    ValueError
        For an unknown ``bench_task``.
    """
    if "id" in filters:
        ids = [*_as_list(ids), *_as_list(filters.pop("id"))]
    unknown = sorted(set(filters) - set(FILTER_COLUMNS))
    if unknown:
        raise TypeError(f"unknown filter(s) {', '.join(unknown)}; known: ids, {', '.join(FILTER_COLUMNS)}")
    wanted = {name: _as_list(values) for name, values in {"ids": ids, **filters}.items()}
    for task in wanted.get("bench_task", []):
        bench_task_ids(task)  # an unknown task is an error, not an empty selection
    return {name: values for name, values in wanted.items() if values}


def record_matches(record: Mapping[str, Any], filters: Mapping[str, list[str]]) -> bool:
    """Whether a record matches every filter of :func:`normalise_filters` (each filter: any of its values).

    Matching is case-insensitive; ``species`` accepts ``human`` and ``mouse``; ``technology`` matches by the
    normalised name (``"Visium HD"`` matches ``"Visium HD 3'"``, ``"Xenium"`` matches ``"Xenium 5k"``; a value that
    is not a canonical technology, such as ``"Xenium 5k"``, matches only itself); a record value holding several
    parts (``"Homo sapiens/Mus musculus"``) matches any of them.
    """
    for name, values in filters.items():
        if name == "ids":
            if str(record.get("id", record.get("sample_id", ""))).casefold() not in {v.casefold() for v in values}:
                return False
        elif not any(_value_matches(name, record_value(record, name), value) for value in values):
            return False
    return True


def record_value(record: Mapping[str, Any], name: str) -> Any:
    """The value a filter looks at in a record (the first of its :data:`FILTER_COLUMNS` present)."""
    for key in FILTER_COLUMNS[name]:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def filter_catalog(
    frame: pd.DataFrame, *, ids: Iterable[str] | str | None = None, **filters: str | Iterable[str] | None
) -> pd.DataFrame:
    """Rows of a catalog frame matching every filter given (see :func:`record_matches`).

    Parameters
    ----------
    frame
        A catalog (one row per sample; an ``id`` column or index).
    ids
        Sample ids.
    **filters
        ``organ``, ``species``, ``technology``, ``oncotree``, ``disease_state``.

    Returns
    -------
    The matching rows, in order.
    """
    wanted = normalise_filters(ids=ids, **filters)
    if not wanted:
        return frame
    records = frame.reset_index().to_dict("records") if "id" not in frame.columns else frame.to_dict("records")
    return frame.loc[[record_matches(record, wanted) for record in records]]


def _value_matches(name: str, field: Any, wanted: str) -> bool:
    if not isinstance(field, str) or not field.strip():
        return False
    if name == "bench_task":
        return field.strip() in bench_task_ids(wanted)
    wanted = wanted.strip().casefold()
    if name == "technology" and wanted in _CANONICAL_TECHNOLOGIES:
        return technology_name(field).casefold() == technology_name(wanted).casefold()
    if name == "species":
        wanted = SPECIES_ALIASES.get(wanted, wanted)
    field = field.strip().casefold()
    # "Homo sapiens/Mus musculus", "Cancer/Genetically modified": each part counts
    return field == wanted or wanted in (part.strip() for part in field.split("/"))


def bench_task_ids(task: str) -> tuple[str, ...]:
    """The sample ids of a HEST-Benchmark task (:data:`~hest_spatialdata.source.layout.BENCH_TASKS`), any case.

    Raises
    ------
    ValueError
        For an unknown task.
    """
    tasks = {name.casefold(): ids for name, ids in BENCH_TASKS.items()}
    if task.strip().casefold() not in tasks:
        raise ValueError(f"unknown HEST-Benchmark task {task!r}; known: {', '.join(BENCH_TASKS)}")
    return tasks[task.strip().casefold()]


def _as_list(values: str | Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [v.strip() for value in values for v in str(value).split(",") if v.strip()]
