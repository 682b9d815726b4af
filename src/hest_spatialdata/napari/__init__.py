"""napari contributions of hest-spatialdata (``napari.yaml``): readers, sample data and the sample browser.

Only this subpackage imports napari and Qt; install them with ``pip install "hest-spatialdata[napari]"``.
"""

from __future__ import annotations
