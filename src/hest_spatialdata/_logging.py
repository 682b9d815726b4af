"""Keep other libraries' noise out of our users' output, in this one place.

ome-zarr's reader logs ``no parent found for <ome_zarr.reader.Label ...>: None`` (a warning, logger
``ome_zarr.reader``) whenever spatialdata reads a labels element: the OME-NGFF ``image-label`` metadata may name
the image the labels were drawn on (``source.image``), and spatialdata's labels (elements of their own, tied to
images by coordinate systems) never do. It was printed on every ``demo``, ``convert`` and ``validate`` run and says
nothing about the store, so exactly that record is dropped; every other ome-zarr message still shows.
"""

from __future__ import annotations

import logging

OME_ZARR_READER_LOGGER = "ome_zarr.reader"
_NO_PARENT = "no parent found for"


class _NoParentFilter(logging.Filter):
    """Drops ome-zarr's "no parent found" record of a labels image without a ``source.image``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_NO_PARENT))


def quiet_ome_zarr() -> None:
    """Install the filter on ome-zarr's reader logger (idempotent; ome-zarr itself is not imported)."""
    logger = logging.getLogger(OME_ZARR_READER_LOGGER)
    if not any(isinstance(f, _NoParentFilter) for f in logger.filters):
        logger.addFilter(_NoParentFilter())
