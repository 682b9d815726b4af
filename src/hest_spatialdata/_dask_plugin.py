"""The dask worker plugin of batch conversions (apart, so that ``batch`` imports without distributed)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class WarmUpPlugin(WorkerPlugin):
    """Import spatialdata and the readers once when a worker starts (and on workers that join later)."""

    name = "hest-spatialdata-warm-up"

    def setup(self, worker: Any) -> None:
        """Import the converter on the worker."""
        from hest_spatialdata.batch import warm_up

        warm_up()
