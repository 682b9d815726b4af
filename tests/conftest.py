from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hest_spatialdata.testing import EXAMPLE_SAMPLE_ID, write_visium_sample

#: Coarser than the demo's 1.5 µm/px so the session fixture builds in a few seconds (~2,750 x 1,850 px).
TEST_PIXEL_SIZE_UM = 2.0
REALDATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def hest_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HEST root holding the Visium example sample (read-only: copy it before corrupting files)."""
    root = tmp_path_factory.mktemp("hest")
    write_visium_sample(root, EXAMPLE_SAMPLE_ID, pixel_size_um=TEST_PIXEL_SIZE_UM)
    return root


@pytest.fixture(scope="session")
def visium_store(hest_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example sample converted with every element (read-only)."""
    from hest_spatialdata.store import convert_sample

    return convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path_factory.mktemp("stores"))


def xy_scale(transformation) -> np.ndarray:
    """The (x, y) scale of a transformation, whatever axes it was stored with."""
    matrix = transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    return np.diag(matrix)[:2]
