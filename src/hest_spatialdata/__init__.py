"""hest-spatialdata: HEST-1k samples as SpatialData Zarr stores.

The public functions are imported lazily, so ``import hest_spatialdata`` (and the CLI's resume checks)
do not pay for importing spatialdata.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hest_spatialdata._version import __version__

# Eager (the module is light): a submodule named like the function would otherwise shadow it once imported.
from hest_spatialdata.validate import validate

if TYPE_CHECKING:
    from hest_spatialdata.hub import catalog, download
    from hest_spatialdata.sample import read_hest
    from hest_spatialdata.store import convert
    from hest_spatialdata.testing import example_sample

_LAZY_IMPORTS = {
    "read_hest": "hest_spatialdata.sample",
    "convert": "hest_spatialdata.store",
    "catalog": "hest_spatialdata.hub",
    "download": "hest_spatialdata.hub",
    "example_sample": "hest_spatialdata.testing",
    "HestInputError": "hest_spatialdata.errors",
}

__all__ = [
    "HestInputError",
    "__version__",
    "catalog",
    "convert",
    "download",
    "example_sample",
    "read_hest",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_IMPORTS:
        return getattr(importlib.import_module(_LAZY_IMPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
