"""Helpers shared by the tests: sizes of the test samples, real data, small utilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

#: Coarser than the demo's 1.5 µm/px so the session fixture builds in a few seconds (~2,750 x 1,850 px).
TEST_PIXEL_SIZE_UM = 2.0
REALDATA = Path(__file__).parent / "data"

#: Xenium samples cropped from the real run (Xenium µm): one per cell-id type of HEST issue #109. XENB, the main
#: one, has ~800 cells and ~245k transcripts in 40k-row row groups (several dask partitions), and a geometry column.
XENIUM_TEST_SAMPLES = {
    "XENB": ("bytes", (3000.0, 2100.0, 3600.0, 2700.0)),
    "XENI": ("int", (3000.0, 2100.0, 3250.0, 2350.0)),
    "XENS": ("str", (3000.0, 2100.0, 3250.0, 2350.0)),
}
XENIUM_TEST_PIXEL_SIZE_UM = 1.0

#: Real catalog ids (Visium) under which the fake hub serves copies of the example sample.
HUB_SAMPLE_IDS = ("ZEN61", "NCBI680")


def xy_scale(transformation) -> np.ndarray:
    """The (x, y) scale of a transformation, whatever axes it was stored with."""
    matrix = transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    return np.diag(matrix)[:2]


def copy_sample(src_root: Path, src_id: str, dst_root: Path, dst_id: str) -> Path:
    """Copy a sample's wsis/st/metadata files under another id (the metadata's ``id`` follows)."""
    from hest_spatialdata.source.layout import PARTS, Part

    for part in (Part.WSI, Part.ST):
        target = PARTS[part].path(dst_root, dst_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PARTS[part].path(src_root, src_id), target)
    meta = json.loads(PARTS[Part.METADATA].path(src_root, src_id).read_text())
    meta.update(id=dst_id, image_filename=PARTS[Part.WSI].path(dst_root, dst_id).name)
    target = PARTS[Part.METADATA].path(dst_root, dst_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(meta, allow_nan=True))
    return dst_root


def synthetic_transcripts(pixel_size_um: float, n_transcripts: int = 150_000):
    """Random transcripts around real Xenium cells of the example layout (the Visium example has none)."""
    import pandas as pd
    from spatialdata.models import PointsModel
    from spatialdata.transformations import Identity, Scale

    from hest_spatialdata.example import visium_layout, xenium_mouse_brain

    rng = np.random.default_rng(0)
    ps = pixel_size_um
    layout = visium_layout(ps)
    cells = xenium_mouse_brain().cells.sample(2000, random_state=0)
    xy = layout.to_px(cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy())
    at = rng.integers(0, len(xy), n_transcripts)
    genes = np.array([f"Gene{i:02d}" for i in range(20)])
    frame = pd.DataFrame(
        {
            "x": xy[at, 0] + rng.normal(0, 3 / ps, n_transcripts),
            "y": xy[at, 1] + rng.normal(0, 3 / ps, n_transcripts),
            "feature_name": pd.Categorical(genes[rng.integers(0, len(genes), n_transcripts)], categories=genes),
            "cell_id": cells["cell_id"].astype(str).to_numpy()[at],
        }
    )
    transformations = {"global": Identity(), "microns": Scale([ps, ps], axes=("x", "y"))}
    return PointsModel.parse(frame, feature_key="feature_name", instance_key="cell_id", transformations=transformations)
