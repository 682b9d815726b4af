from __future__ import annotations

from pathlib import Path

import pytest

from hest_spatialdata.example import EXAMPLE_SAMPLE_ID, write_visium_sample, write_xenium_sample

from .helpers import (
    HUB_SAMPLE_IDS,
    REALDATA,
    TEST_PIXEL_SIZE_UM,
    XENIUM_TEST_PIXEL_SIZE_UM,
    XENIUM_TEST_SAMPLES,
    copy_sample,
    synthetic_transcripts,
)


@pytest.fixture(scope="session")
def hest_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HEST root holding the Visium example sample (read-only: copy it before corrupting files)."""
    root = tmp_path_factory.mktemp("hest")
    write_visium_sample(root, EXAMPLE_SAMPLE_ID, pixel_size_um=TEST_PIXEL_SIZE_UM)
    return root


@pytest.fixture(scope="session")
def visium_store(hest_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example sample converted with every element (read-only)."""
    from hest_spatialdata.storage.store import convert_sample

    return convert_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path_factory.mktemp("stores"))


@pytest.fixture(scope="session")
def sdata(visium_store: Path):
    """The example store, read once for the session (read-only: never modify it)."""
    import spatialdata as sd

    return sd.read_zarr(visium_store)


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
    from hest_spatialdata.storage.store import convert_sample

    return convert_sample(xenium_root, "XENB", tmp_path_factory.mktemp("xenium_stores"))


@pytest.fixture(scope="session")
def hest_root_pair(hest_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HEST root with two samples, EXAMPLE1 and EXAMPLE2 (a copy under another id); read-only."""
    root = copy_sample(hest_root, EXAMPLE_SAMPLE_ID, tmp_path_factory.mktemp("hest_pair"), EXAMPLE_SAMPLE_ID)
    return copy_sample(hest_root, EXAMPLE_SAMPLE_ID, root, "EXAMPLE2")


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three samples of :mod:`hest_spatialdata.example.cohort` (two patients) converted into one folder of
    stores (read-only: copy it before adding to the stores)."""
    from hest_spatialdata.example.cohort import write_cohort_samples
    from hest_spatialdata.storage.store import convert_sample

    hest = tmp_path_factory.mktemp("cohort_hest")
    stores = tmp_path_factory.mktemp("cohort_stores")
    for sample_id in write_cohort_samples(hest, pixel_size_um=TEST_PIXEL_SIZE_UM):
        convert_sample(hest, sample_id, stores)
    return stores


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
    from hest_spatialdata.roots.remote import forget_roots

    forget_roots()
    with FakeHub(hub_repo) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        yield hub
    forget_roots()


# --------------------------------------------------------------------------------------------- viewers and plots


@pytest.fixture(scope="session")
def rich_store(visium_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``visium_store`` plus synthetic transcripts (a Visium sample has none), for the viewer and plot tests
    (read-only)."""
    import spatialdata as sd

    sdata = sd.read_zarr(visium_store)
    hest = dict(sdata.attrs["hest"])
    sdata["transcripts"] = synthetic_transcripts(hest["pixel_size_um"])
    kinds = {"images": sdata.images, "shapes": sdata.shapes, "points": sdata.points, "tables": sdata.tables}
    sdata.attrs["hest"] = hest | {"elements": {kind: sorted(found) for kind, found in kinds.items() if found}}
    path = tmp_path_factory.mktemp("rich") / visium_store.name
    sdata.write(path)
    return path


# --------------------------------------------------------------------------------------------- object storage


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server behind a fault-injecting proxy, both on loopback, for the whole session."""
    pytest.importorskip("moto.server")
    from .s3_server import LoopbackS3

    with LoopbackS3() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server, monkeypatch: pytest.MonkeyPatch):
    """A fresh bucket on ``s3_server``, no faults, an empty request log, and the AWS environment (fake keys,
    endpoint) set so that s3fs and subprocesses reach it without storage options."""
    import fsspec

    from .s3_server import Bucket

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    s3_server.set_faults()
    fsspec.get_filesystem_class("s3").clear_instance_cache()  # instances built for another bucket's test
    bucket = Bucket(s3_server, s3_server.new_bucket())
    s3_server.reset_log()
    yield bucket
    s3_server.set_faults()
