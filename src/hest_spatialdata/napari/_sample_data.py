"""napari sample data: the example HEST sample shipped with the package."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hest_spatialdata.napari._layers import LayerDataTuple


def example_sample_data() -> list[LayerDataTuple]:
    """The example sample ``EXAMPLE1`` (real Xenium mouse brain pooled into Visium spots on a real H&E).

    Written once to the user cache (``~/.cache/hest-spatialdata/example``, a few seconds) and read from there
    lazily: no SpatialData store is written.

    Returns
    -------
    napari layer data tuples: H&E and spots coloured by the most expressed gene.
    """
    from hest_spatialdata.example import EXAMPLE_SAMPLE_ID, example_sample
    from hest_spatialdata.napari._layers import hest_sample_layers

    return hest_sample_layers(example_sample(), EXAMPLE_SAMPLE_ID)
