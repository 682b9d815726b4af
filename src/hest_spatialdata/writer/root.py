"""The root of a store whose elements were all written without spatialdata: its attributes, as spatialdata writes them.

``SpatialData.write`` puts ``{"spatialdata_attrs": {"version": <container format>, "spatialdata_software_version":
<spatialdata's version>}}`` and ``sdata.attrs`` in the root group's attributes, then consolidates the metadata of
the whole hierarchy into the root ``zarr.json``. :func:`write_root_attrs` does the same, so that a store holding
only the slide is written without importing spatialdata (seconds of CPU per process);
``tests/test_image_writer.py`` compares such a store with the one ``SpatialData.write`` produces.
"""

from __future__ import annotations

import warnings
from importlib.metadata import version
from typing import Any

import zarr

#: The SpatialData container format spatialdata 0.8 writes (``CurrentSpatialDataContainerFormat``).
SPATIALDATA_CONTAINER_VERSION = "0.2"


def write_root_attrs(root: zarr.Group, attrs: dict[str, Any]) -> None:
    """Write the root attributes of a SpatialData store (``spatialdata_attrs`` + ``attrs``), then consolidate.

    Parameters
    ----------
    root
        The store's root group, every element already written.
    attrs
        The ``SpatialData.attrs`` to store (strict JSON).
    """
    spatialdata_attrs = {
        "version": SPATIALDATA_CONTAINER_VERSION,
        "spatialdata_software_version": version("spatialdata"),
    }
    root.attrs.put({"spatialdata_attrs": spatialdata_attrs} | attrs)
    with warnings.catch_warnings():  # as spatialdata: files that are not zarr (e.g. Parquet) are reported, harmlessly
        warnings.filterwarnings("ignore", category=zarr.errors.ZarrUserWarning)
        zarr.consolidate_metadata(root.store, path=root.path or None)
