"""hest-spatialdata: HEST-1k samples as SpatialData Zarr stores.

The public functions are imported lazily, so ``import hest_spatialdata`` (and the CLI's resume checks)
do not pay for importing spatialdata.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hest_spatialdata._logging import quiet_ome_zarr
from hest_spatialdata._version import __version__

# Eager (the module is light): a submodule named like the function would otherwise shadow it once imported.
from hest_spatialdata.validate import validate

quiet_ome_zarr()
# The same for the subpackage `benchmark` (light: its attributes are lazy): imported now, then unbound, so that
# `hs.benchmark` is the function (`from hest_spatialdata.benchmark import embed` still reaches the package).
importlib.import_module("hest_spatialdata.benchmark")
del globals()["benchmark"]

if TYPE_CHECKING:
    from hest_spatialdata.benchmark._embed import embed
    from hest_spatialdata.benchmark._protocol import BenchmarkResult, benchmark
    from hest_spatialdata.cohort import Cohort, open_cohort
    from hest_spatialdata.conversion.batch import ConvertOptions
    from hest_spatialdata.conversion.convert import ConversionError, convert
    from hest_spatialdata.example import example_sample
    from hest_spatialdata.readers.sample import read_hest
    from hest_spatialdata.roots.hub import catalog, download
    from hest_spatialdata.storage.reader import read_store
    from hest_spatialdata.views.legacy import to_legacy_anndata

_LAZY_IMPORTS = {
    "read_hest": "hest_spatialdata.readers.sample",
    "convert": "hest_spatialdata.conversion.convert",
    "ConvertOptions": "hest_spatialdata.conversion.batch",
    "ConversionError": "hest_spatialdata.conversion.convert",
    "catalog": "hest_spatialdata.roots.hub",
    "download": "hest_spatialdata.roots.hub",
    "example_sample": "hest_spatialdata.example",
    "HestInputError": "hest_spatialdata.errors",
    "open_cohort": "hest_spatialdata.cohort",
    "Cohort": "hest_spatialdata.cohort",
    "to_legacy_anndata": "hest_spatialdata.views.legacy",
    "read_store": "hest_spatialdata.storage.reader",
    "embed": "hest_spatialdata.benchmark._embed",
    "benchmark": "hest_spatialdata.benchmark._protocol",
    "BenchmarkResult": "hest_spatialdata.benchmark._protocol",
}

__all__ = [
    "BenchmarkResult",
    "Cohort",
    "ConversionError",
    "ConvertOptions",
    "HestInputError",
    "__version__",
    "benchmark",
    "catalog",
    "convert",
    "download",
    "embed",
    "example_sample",
    "open_cohort",
    "read_hest",
    "read_store",
    "to_legacy_anndata",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_IMPORTS:
        return getattr(importlib.import_module(_LAZY_IMPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
