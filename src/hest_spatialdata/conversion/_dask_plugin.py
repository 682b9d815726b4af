"""The dask worker plugin of batch conversions (apart, so that ``batch`` imports without distributed)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class WarmUpPlugin(WorkerPlugin):
    """Import spatialdata and the readers once when a worker starts (and on workers that join later)."""

    name = "hest-spatialdata-warm-up"

    def setup(self, worker: Any) -> None:
        """Import the converter on the worker."""
        warm_up()


def warm_up() -> None:
    """Import spatialdata and the readers (seconds), once per worker process, before the first sample."""
    import spatialdata  # noqa: F401  # sample.py and store.py import it only when a store is written

    import hest_spatialdata.readers.sample
    import hest_spatialdata.storage.store  # noqa: F401
