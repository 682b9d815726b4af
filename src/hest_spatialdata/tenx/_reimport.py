"""An imported store's run read again from its 10x folder, for ``validate`` (the fidelity of an imported store)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hest_spatialdata._constants import Elements, Technology
from hest_spatialdata.errors import HestInputError

if TYPE_CHECKING:
    import dask.array as da
    from spatialdata import SpatialData


def reimport(folder: str | Path, hest: dict[str, Any]) -> tuple[SpatialData, list[da.Array], dict[str, Any]]:
    """The elements an import of ``folder`` makes, with the H&E and the options recorded in ``attrs["hest"]``.

    Parameters
    ----------
    folder
        The 10x output folder the store was imported from.
    hest
        The store's ``attrs["hest"]`` (its ``imported`` entry names the H&E, the alignment, the nuclei).

    Returns
    -------
    ``(elements but he, the H&E's levels as (c, y, x) dask arrays, the metadata computed from the run)``.

    Raises
    ------
    HestInputError
        If the store was not imported, or the folder or its H&E is missing or bad.
    """
    import dask.array as da
    import numpy as np

    from hest_spatialdata.readers._context import DEFAULT_CHUNK_SIZE
    from hest_spatialdata.tenx._common import TenxSource
    from hest_spatialdata.tenx._detect import find_outputs
    from hest_spatialdata.tenx._run import ImportRequest

    sample_id = hest.get("sample_id")
    imported = hest.get("imported")
    if not isinstance(imported, dict):
        raise HestInputError(
            sample_id, folder, "the store was not imported from a 10x run (no attrs['hest']['imported'])"
        )
    technology, outs = find_outputs(folder, sample_id)
    if technology != Technology(imported.get("technology")):
        raise HestInputError(
            sample_id, folder, f"a {technology.value} run; the store was imported from {imported['technology']}"
        )

    def optional(key: str) -> Path | None:
        return None if imported.get(key) is None else Path(imported[key])

    request = ImportRequest(
        path=Path(folder), folder=outs, sample_id=sample_id, image=Path(imported["image"]),
        alignment=optional("alignment"), nuclei=optional("nuclei"),
    )  # fmt: skip
    source = TenxSource(request, technology)
    _, levels, ctx = source.checked()
    wanted = [name for names in hest.get("elements", {}).values() for name in names if name != Elements.HE.value]
    sdata = source.read(wanted, DEFAULT_CHUNK_SIZE)
    chunks = (DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, 3)
    meta = np.empty((0, 0, 0), np.uint8)
    arrays = [da.from_array(level, chunks=chunks, asarray=True, meta=meta).transpose(2, 0, 1) for level in levels]
    return sdata, arrays, ctx.metadata
