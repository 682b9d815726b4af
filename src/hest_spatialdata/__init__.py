"""hest-spatialdata: HEST-1k samples as SpatialData Zarr stores.

The public functions are imported lazily, so ``import hest_spatialdata`` (and the CLI's resume checks)
do not pay for importing spatialdata.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hest_spatialdata._version import __version__

if TYPE_CHECKING:
    from hest_spatialdata.sample import read_hest
    from hest_spatialdata.store import convert, validate
    from hest_spatialdata.testing import example_sample

_LAZY_IMPORTS = {
    "read_hest": "hest_spatialdata.sample",
    "convert": "hest_spatialdata.store",
    "validate": "hest_spatialdata.store",
    "example_sample": "hest_spatialdata.testing",
    "HestInputError": "hest_spatialdata.errors",
}

__all__ = ["HestInputError", "__version__", "convert", "example_sample", "read_hest", "validate"]


def __getattr__(name: str) -> Any:
    if name in _LAZY_IMPORTS:
        return getattr(importlib.import_module(_LAZY_IMPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
