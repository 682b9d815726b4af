from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hest_spatialdata.testing import EXAMPLE_SAMPLE_ID, write_visium_sample, write_xenium_sample

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


#: Xenium samples cropped from the real run (Xenium µm): one per cell-id type of HEST issue #109. XENB, the main
#: one, has ~800 cells and ~245k transcripts in 40k-row row groups (several dask partitions), and a geometry column.
XENIUM_TEST_SAMPLES = {
    "XENB": ("bytes", (3000.0, 2100.0, 3600.0, 2700.0)),
    "XENI": ("int", (3000.0, 2100.0, 3250.0, 2350.0)),
    "XENS": ("str", (3000.0, 2100.0, 3250.0, 2350.0)),
}
XENIUM_TEST_PIXEL_SIZE_UM = 1.0


@pytest.fixture(scope="session")
def xenium_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HEST root holding the Xenium test samples (read-only: copy it before corrupting files)."""
    root = tmp_path_factory.mktemp("hest_xenium")
    for sample_id, (id_type, crop) in XENIUM_TEST_SAMPLES.items():
        write_xenium_sample(
            root, sample_id, pixel_size_um=XENIUM_TEST_PIXEL_SIZE_UM, crop_um=crop, cell_id_type=id_type,
            transcripts_geometry=id_type == "bytes", row_group_size=40_000,
        )  # fmt: skip
    return root


@pytest.fixture(scope="session")
def xenium_store(xenium_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The XENB sample converted with every element (read-only)."""
    from hest_spatialdata.store import convert_sample

    return convert_sample(xenium_root, "XENB", tmp_path_factory.mktemp("xenium_stores"))


def xy_scale(transformation) -> np.ndarray:
    """The (x, y) scale of a transformation, whatever axes it was stored with."""
    matrix = transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    return np.diag(matrix)[:2]


#: Real catalog ids (Visium) under which the fake hub serves copies of the example sample.
HUB_SAMPLE_IDS = ("ZEN61", "NCBI680")


def copy_sample(src_root: Path, src_id: str, dst_root: Path, dst_id: str) -> Path:
    """Copy a sample's wsis/st/metadata files under another id (the metadata's ``id`` follows)."""
    import json
    import shutil

    for folder, suffix in (("wsis", ".tif"), ("st", ".h5ad")):
        (dst_root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / folder / f"{src_id}{suffix}", dst_root / folder / f"{dst_id}{suffix}")
    meta = json.loads((src_root / "metadata" / f"{src_id}.json").read_text())
    meta.update(id=dst_id, image_filename=f"{dst_id}.tif")
    (dst_root / "metadata").mkdir(parents=True, exist_ok=True)
    (dst_root / "metadata" / f"{dst_id}.json").write_text(json.dumps(meta, allow_nan=True))
    return dst_root


@pytest.fixture(scope="session")
def hest_root_pair(hest_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HEST root with two samples, EXAMPLE1 and EXAMPLE2 (a copy under another id); read-only."""
    root = copy_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path_factory.mktemp("hest_pair"), EXAMPLE_SAMPLE_ID)
    return copy_sample(hest_root, EXAMPLE_SAMPLE_ID, root, "EXAMPLE2")


@pytest.fixture(scope="session")
def hub_repo(hest_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files of a fake ``MahmoodLab/hest`` repo: the real v1_1_0 and v1_3_0 catalogs, a README, and the
    example sample as ZEN61 and NCBI680 with a thumbnail each (read-only)."""
    import shutil

    root = tmp_path_factory.mktemp("hub_repo")
    for name in ("HEST_v1_1_0.csv", "HEST_v1_3_0.csv"):
        shutil.copyfile(REALDATA / "hest_metadata" / name, root / name)
    (root / "README.md").write_text("# HEST-1k (test copy)\n")
    for sample_id in HUB_SAMPLE_IDS:
        copy_sample(hest_root, EXAMPLE_SAMPLE_ID, root, sample_id)
        (root / "thumbnails").mkdir(exist_ok=True)
        (root / "thumbnails" / f"{sample_id}_downscaled_fullres.jpeg").write_bytes(b"\xff\xd8 thumbnail")
    return root


@pytest.fixture
def fake_hub(hub_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A loopback hub serving ``hub_repo``, with HF_ENDPOINT pointing at it and an empty hub cache and login."""
    import huggingface_hub.constants

    from .hub_server import FakeHub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    with FakeHub(hub_repo) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub


# --------------------------------------------------------------------------------------------- viewers and plots


@pytest.fixture(scope="session")
def rich_store(visium_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``visium_store`` plus nuclei, tissue and transcripts (synthetic ones for the elements the converter does not
    produce from the example sample), for the viewer, plot and notebook tests (read-only)."""
    import spatialdata as sd

    sdata = sd.read_zarr(visium_store)
    hest = dict(sdata.attrs["hest"])
    for name, element in _synthetic_elements(hest["pixel_size_um"]).items():
        if name not in sdata:
            sdata[name] = element
    kinds = {"images": sdata.images, "shapes": sdata.shapes, "points": sdata.points, "tables": sdata.tables}
    sdata.attrs["hest"] = hest | {"elements": {kind: sorted(found) for kind, found in kinds.items() if found}}
    path = tmp_path_factory.mktemp("rich") / visium_store.name
    sdata.write(path)
    return path


def _synthetic_elements(pixel_size_um: float, n_nuclei: int = 2000, n_transcripts: int = 150_000) -> dict:
    """Nuclei (CellViT classes) on real Xenium nuclei, the tissue outline of the example, random transcripts."""
    import geopandas as gpd
    import pandas as pd
    import shapely
    from spatialdata.models import PointsModel, ShapesModel
    from spatialdata.transformations import Identity, Scale

    from hest_spatialdata.testing import tissue_mask, visium_layout, xenium_mouse_brain

    rng = np.random.default_rng(0)
    ps = pixel_size_um
    layout = visium_layout(ps)
    cells = xenium_mouse_brain().cells.sample(n_nuclei, random_state=0)
    xy = layout.to_px(cells["x_centroid"].to_numpy(), cells["y_centroid"].to_numpy())
    radius = np.sqrt(cells["nucleus_area"].to_numpy() / np.pi) / ps
    classes = rng.choice(["Neoplastic", "Inflammatory", "Connective", "Dead", "Epithelial"], n_nuclei)
    nuclei = gpd.GeoDataFrame(
        {"class": pd.Categorical(classes)},
        geometry=shapely.buffer(shapely.points(xy), radius, quad_segs=3),
        index=pd.Index(cells["cell_id"].astype(str).to_numpy()),
    )
    side = 50.0 / ps  # tissue_mask bins are 50 µm
    rows, cols = np.nonzero(tissue_mask(layout))
    outline = shapely.union_all(shapely.box(cols * side, rows * side, (cols + 1) * side, (rows + 1) * side))
    parts = list(getattr(outline, "geoms", [outline]))
    tissue = gpd.GeoDataFrame({"tissue_id": np.arange(len(parts))}, geometry=parts)
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

    def transformations() -> dict:
        return {"global": Identity(), "microns": Scale([ps, ps], axes=("x", "y"))}

    return {
        "nuclei": ShapesModel.parse(nuclei, transformations=transformations()),
        "tissue": ShapesModel.parse(tissue, transformations=transformations()),
        "transcripts": PointsModel.parse(
            frame, feature_key="feature_name", instance_key="cell_id", transformations=transformations()
        ),
    }
