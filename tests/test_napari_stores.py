"""The napari sample browser lists the converted stores of its folder and opens them through napari-spatialdata."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from hest_spatialdata.example import EXAMPLE_SAMPLE_ID

pytestmark = pytest.mark.napari
HAS_DISPLAY = not sys.platform.startswith("linux") or any(map(os.environ.get, ("DISPLAY", "WAYLAND_DISPLAY")))
OFFSCREEN = os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal")


@pytest.mark.skipif(not HAS_DISPLAY or OFFSCREEN, reason="needs a display with OpenGL (Xvfb through pytest-xvfb)")
def test_browser_lists_and_opens_local_stores(make_napari_viewer, qtbot, visium_store: Path) -> None:
    from hest_spatialdata.napari._widget import HestBrowser

    viewer = make_napari_viewer()
    browser = HestBrowser(viewer, hest_dir=visium_store.parent)  # a folder of stores, no HEST sample in it
    qtbot.addWidget(browser)
    assert browser.visible_samples() == [EXAMPLE_SAMPLE_ID]
    assert browser.catalog.loc[EXAMPLE_SAMPLE_ID, "store"] == str(visium_store)
    browser.set_filter("technology", "Visium")
    browser.select_sample(EXAMPLE_SAMPLE_ID)
    assert browser.open_selected() is None  # opened by the store reader, not a HEST-sample worker
    from hest_spatialdata.napari._layers import NUCLEI_OUTLINES, TISSUE_OUTLINE

    # the default layers load in a worker: wait for all of them before the viewer closes
    expected = {"he", TISSUE_OUTLINE, "spots", NUCLEI_OUTLINES}
    qtbot.waitUntil(lambda: expected <= {layer.name for layer in viewer.layers}, timeout=180_000)
    qtbot.wait(500)
    assert viewer.layers["he"].metadata["sdata"].path is not None  # backed by the store (napari-spatialdata)


@pytest.mark.skipif(not HAS_DISPLAY or OFFSCREEN, reason="needs a display with OpenGL (Xvfb through pytest-xvfb)")
def test_browser_lists_and_opens_stores_in_a_bucket(make_napari_viewer, qtbot, visium_store: Path, s3_bucket) -> None:
    from hest_spatialdata.napari._widget import HestBrowser
    from hest_spatialdata.storage._publish import publish_store
    from hest_spatialdata.storage.locations import locate

    url = s3_bucket.url("stores", visium_store.name)
    publish_store(visium_store, locate(url), sample_id=EXAMPLE_SAMPLE_ID, overwrite=False)
    viewer = make_napari_viewer()
    browser = HestBrowser(viewer)
    qtbot.addWidget(browser)
    browser.set_hest_dir(s3_bucket.url("stores"))  # a folder URL of stores
    assert browser.visible_samples() == [EXAMPLE_SAMPLE_ID]
    assert browser.catalog.loc[EXAMPLE_SAMPLE_ID, "store"] == url
    browser.select_sample(EXAMPLE_SAMPLE_ID)
    assert browser.open_selected() is None  # opened by the store reader
    qtbot.waitUntil(lambda: "he" in {layer.name for layer in viewer.layers}, timeout=180_000)
    qtbot.wait(500)
