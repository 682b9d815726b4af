"""One reader module per HEST source part, all with the same contract.

Each module named by a part's ``reader`` in :data:`hest_spatialdata.source.layout.PARTS` exposes::

    def read(path: Path, ctx: SampleContext, elements: frozenset[Elements]) -> dict[str, element]

``path`` is the part's file, ``ctx`` (:class:`~hest_spatialdata.readers._context.SampleContext`) what is known of
the sample (id, pixel size, technology, slide size, metadata, its other files), ``elements`` the elements wanted
from this part (a subset of the part's ``elements`` in the registry). It returns those elements, parsed with
spatialdata's models, in the ``global`` and ``microns`` coordinate systems, or raises
:class:`~hest_spatialdata.errors.HestInputError` naming the sample and the file. The checks and their wording
(coordinates on the slide, polygons, unique ids) are shared in :mod:`hest_spatialdata.readers._checks`.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def reader_module(name: str) -> ModuleType:
    """The reader module ``hest_spatialdata.readers.{name}`` (imported on first use)."""
    return importlib.import_module(f"{__name__}.{name}")
