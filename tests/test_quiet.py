"""Users see only our output: ome-zarr's "no parent found" warning on reading labels is dropped, nothing else."""

from __future__ import annotations

import logging
import subprocess
import sys

from hest_spatialdata._logging import OME_ZARR_READER_LOGGER


def test_validate_prints_no_ome_zarr_noise(visium_store):
    assert (visium_store / "labels").is_dir()  # reading labels is what made ome-zarr complain
    run = subprocess.run(
        [sys.executable, "-m", "hest_spatialdata", "validate", str(visium_store)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no parent found" not in run.stdout + run.stderr


def test_other_ome_zarr_warnings_still_show(caplog):
    import hest_spatialdata  # noqa: F401  # installs the filter

    logger = logging.getLogger(OME_ZARR_READER_LOGGER)
    with caplog.at_level(logging.WARNING, logger=OME_ZARR_READER_LOGGER):
        logger.warning("no parent found for %s: %s", "<Label>", None)
        logger.warning("something else about %s", "a store")
    assert [r.getMessage() for r in caplog.records] == ["something else about a store"]
