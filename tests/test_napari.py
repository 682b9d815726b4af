"""The napari plugin: readers, sample data, sample browser and what the canvas shows.

The viewer tests need an X display with OpenGL: where ``Xvfb`` is installed, the pytest-xvfb plugin starts a virtual
one and sets ``DISPLAY``; elsewhere they are skipped, with the reason (``QT_QPA_PLATFORM=offscreen`` has no OpenGL,
see docs/stack_notes.md). Set ``HEST_SCREENSHOT_DIR`` to keep the screenshots.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from hest_spatialdata.example import EXAMPLE_SAMPLE_ID
from hest_spatialdata.napari._layers import NUCLEI_OUTLINES, TISSUE_OUTLINE, TRANSCRIPTS_SUBSAMPLE
from hest_spatialdata.napari._reader import find_hest_sample, get_hest_reader, get_store_reader
from hest_spatialdata.views._palette import NUCLEUS_CLASS_COLORS


def _no_display_reason() -> str | None:
    """Why no viewer can be opened here, or ``None``. pytest-xvfb has set ``DISPLAY`` by now if it started Xvfb."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform.split(":")[0] in ("offscreen", "minimal"):
        return f"QT_QPA_PLATFORM={platform} gives Qt no OpenGL context: unset it and install Xvfb for pytest-xvfb"
    if not sys.platform.startswith("linux") or any(map(os.environ.get, ("DISPLAY", "WAYLAND_DISPLAY"))):
        return None
    return "needs a display: no DISPLAY and no Xvfb for pytest-xvfb to start (apt-get install xvfb, see README)"


NO_DISPLAY_REASON = _no_display_reason()
needs_display = pytest.mark.skipif(NO_DISPLAY_REASON is not None, reason=NO_DISPLAY_REASON or "")
pytestmark = pytest.mark.napari
PLUGIN = "hest-spatialdata"
#: napari-spatialdata and our workers load layers in threads; the first load pays for imports and numba compiling.
LOAD_TIMEOUT_MS = 180_000


def _layer_names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


#: Layers of the example sample read from a HEST root: every element the converter reads from it, with the
#: spots' transcripts absent (Visium) and its ~37k nuclei as outlines from a labels pyramid.
SAMPLE_LAYERS = ["he", TISSUE_OUTLINE, "spots", NUCLEI_OUTLINES]
#: The default layers of the rich store, bottom to top.
STORE_LAYERS = [*SAMPLE_LAYERS, TRANSCRIPTS_SUBSAMPLE]
#: The window size of a laptop screen: the canvas is what a user sees.
WINDOW_SIZE = (1280, 900)


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


# --------------------------------------------------------------------------------------------- readers, no viewer


def test_store_reader_claims_only_our_stores(visium_store: Path, tmp_path: Path) -> None:
    import spatialdata as sd
    import zarr

    assert get_store_reader(str(visium_store)) is not None
    assert get_store_reader([str(visium_store)]) is not None
    plain = tmp_path / "plain.zarr"
    zarr.open_group(plain, mode="w").attrs["hello"] = "world"
    foreign = tmp_path / "foreign.zarr"
    sdata = sd.read_zarr(visium_store)
    sd.SpatialData(shapes={"spots": sdata["spots"]}).write(foreign)
    for path in (plain, foreign, tmp_path / "missing.zarr", tmp_path):
        assert get_store_reader(str(path)) is None, path
    assert get_hest_reader(str(visium_store)) is None


def test_find_hest_sample(hest_root: Path, tmp_path: Path) -> None:
    sid = EXAMPLE_SAMPLE_ID
    for path in (hest_root, hest_root / "wsis" / f"{sid}.tif", hest_root / "st" / f"{sid}.h5ad"):
        assert find_hest_sample(path) == (hest_root, sid), path
    assert find_hest_sample(hest_root / "metadata" / f"{sid}.json") == (hest_root, sid)
    assert find_hest_sample(hest_root / "wsis") is None
    stray = tmp_path / "wsis" / "other.tif"  # a wsis/ folder without metadata
    stray.parent.mkdir()
    stray.write_bytes(b"")
    assert find_hest_sample(stray) is None
    assert get_hest_reader(str(stray)) is None
    assert get_hest_reader(str(hest_root / "st" / f"{sid}.h5ad")) is not None


def test_sample_layers(rich_store: Path) -> None:
    import spatialdata as sd

    from hest_spatialdata.napari._layers import sample_layers, transcripts_layer

    sdata = sd.read_zarr(rich_store)
    few = len(sdata["nuclei"]) - 1
    many = {kwargs["name"]: kind for _, kwargs, kind in sample_layers(sdata, max_nuclei_polygons=few)}
    assert many[NUCLEI_OUTLINES] == "labels"  # outlines from a labels pyramid above max_nuclei_polygons
    subsample = transcripts_layer(sdata, n=1000)[0]
    assert 500 < len(subsample) < 2000
    sdata = _crop(sdata)  # a few hundred nuclei: polygons
    layers = {kwargs["name"]: (data, kwargs, kind) for data, kwargs, kind in sample_layers(sdata, gene="Slc17a7")}
    assert list(layers) == STORE_LAYERS
    assert set(layers[NUCLEI_OUTLINES][1]["features"]["class"]) - {"none"} <= set(NUCLEUS_CLASS_COLORS)
    he, kwargs, kind = layers["he"]
    assert (kind, kwargs["rgb"], kwargs["multiscale"]) == ("image", True, True)
    assert he[0].shape == (*sdata["he"]["scale0"]["image"].shape[1:], 3)
    spots, kwargs, _ = layers["spots"]
    centre = sdata["spots"].geometry.iloc[0]
    np.testing.assert_allclose(spots[0], [centre.y, centre.x])  # napari's (y, x)
    assert list(kwargs["features"].columns) == ["Slc17a7"]
    assert kwargs["face_color"] == "transparent" and kwargs["border_width_is_relative"]  # rings: the H&E inside
    assert np.unique(kwargs["border_color"], axis=0).shape[0] > 10  # coloured by expression
    assert len(layers[TRANSCRIPTS_SUBSAMPLE][0]) == len(sdata["transcripts"])  # fewer than MAX_TRANSCRIPTS
    tissue_rings = sum(1 + len(g.interiors) for g in sdata["tissue"].geometry)
    assert len(layers[TISSUE_OUTLINE][0]) == tissue_rings

    microns = {k["name"]: k for _, k, _ in sample_layers(sdata, coordinate_system="microns")}
    ps = sdata.attrs["hest"]["pixel_size_um"]
    np.testing.assert_allclose(np.diag(microns["he"]["affine"])[:2], [ps, ps])
    np.testing.assert_allclose(microns["spots"]["size"], layers["spots"][1]["size"] * ps)


def _crop(sdata):
    """The top-left quarter of the slide."""
    from spatialdata import bounding_box_query

    h, w = sdata["he"]["scale0"]["image"].shape[1:]
    hest = sdata.attrs["hest"]
    crop = bounding_box_query(sdata, axes=("x", "y"), min_coordinate=[0, 0], max_coordinate=[w / 2, h / 2],
                              target_coordinate_system="global", filter_table=True)  # fmt: skip
    crop.attrs["hest"] = hest
    return crop


# --------------------------------------------------------------------------------------------- in a viewer


@needs_display
def test_open_store_through_napari_spatialdata(make_napari_viewer, qtbot, rich_store: Path) -> None:
    from napari.layers import Labels

    viewer = make_napari_viewer()
    assert viewer.open(rich_store, plugin=PLUGIN) == []  # layers come from our worker
    qtbot.waitUntil(lambda: _layer_names(viewer) == STORE_LAYERS, timeout=LOAD_TIMEOUT_MS)
    he, spots, nuclei = viewer.layers["he"], viewer.layers["spots"], viewer.layers[NUCLEI_OUTLINES]
    assert he.multiscale and he.rgb
    assert he.metadata["sdata"].path is not None  # backed by the store: napari-spatialdata can save into it
    assert spots.metadata["adata"] is not None  # napari-spatialdata's own layer: its View widget colours it
    _assert_rings_coloured(spots)
    # napari-spatialdata's gene picker colours the faces: the colours go to the rings, the faces stay transparent
    before = spots.border_color.copy()
    viewer.layers.selection.active = spots
    view = next(w for name, w in viewer.window.dock_widgets.items() if name.startswith("View"))
    assert view.model.layer.name == "spots"  # a proxy of the layer
    view.var_widget._onAction(["Gad1"])
    assert list(spots.features.columns)[0] == "Gad1"
    _assert_rings_coloured(spots)
    assert not np.allclose(spots.border_color, before)
    # nuclei at any count: outlines by class from the labels pyramid
    assert isinstance(nuclei, Labels) and nuclei.multiscale
    classes = set(nuclei.features["class"]) - {"none"}
    assert classes == set(viewer.layers[NUCLEI_OUTLINES].metadata["classes"]) and len(classes) > 1
    for value, name in zip(nuclei.features["index"], nuclei.features["class"], strict=True):
        if name in NUCLEUS_CLASS_COLORS:
            np.testing.assert_allclose(nuclei.colormap.map(value)[..., :3].ravel(), _rgb(NUCLEUS_CLASS_COLORS[name]))
    assert "SpatialData" in viewer.window.dock_widgets
    legend = viewer.window.dock_widgets["Nuclei classes"].text()
    assert all(name in legend and NUCLEUS_CLASS_COLORS[name] in legend for name in classes & set(NUCLEUS_CLASS_COLORS))

    # switching coordinate system moves napari-spatialdata's layers and ours together
    ps = he.metadata["sdata"].attrs["hest"]["pixel_size_um"]
    napari_spatialdata_widget = viewer.window.dock_widgets["SpatialData"]
    napari_spatialdata_widget.coordinate_system_widget.setCurrentRow(1)  # microns
    for name in STORE_LAYERS:
        np.testing.assert_allclose(viewer.layers[name].affine.scale, [ps, ps], err_msg=name)


def _assert_rings_coloured(spots) -> None:
    """Spots drawn as rings coloured by a gene: transparent faces, borders of many colours, fully opaque."""
    assert (spots.face_color[:, 3] == 0).all()
    assert np.unique(spots.border_color, axis=0).shape[0] > 10
    assert spots.border_width_is_relative and spots.border_width.min() > 0 and spots.border_width.max() < 0.3
    assert spots.opacity == 1.0


def _rgb(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])


@needs_display
def test_nuclei_polygons_through_napari_spatialdata(make_napari_viewer, qtbot, rich_store: Path) -> None:
    import spatialdata as sd

    from hest_spatialdata.napari._spatialdata_view import open_in_napari_spatialdata

    viewer = make_napari_viewer()
    sdata = _crop(sd.read_zarr(rich_store))
    loader = open_in_napari_spatialdata(sdata, gene="Gad1", max_nuclei_polygons=10**6)
    qtbot.waitUntil(lambda: loader.done, timeout=LOAD_TIMEOUT_MS)
    assert _layer_names(viewer) == STORE_LAYERS
    nuclei = viewer.layers[NUCLEI_OUTLINES]
    assert len(nuclei.data) == len(sdata["nuclei"])
    classes = nuclei.features["class"].astype(str).to_numpy()
    first = np.flatnonzero(classes == classes[0])
    other = np.flatnonzero(classes != classes[0])
    assert np.allclose(nuclei.edge_color[first], nuclei.edge_color[first[0]])
    assert not np.allclose(nuclei.edge_color[other[0]], nuclei.edge_color[first[0]])
    assert list(viewer.layers["spots"].features.columns) == ["Gad1"]


@needs_display
def test_clearing_layers_while_loading_cancels_the_load(make_napari_viewer, qtbot, rich_store: Path) -> None:
    import spatialdata as sd

    from hest_spatialdata.napari._spatialdata_view import open_in_napari_spatialdata

    viewer = make_napari_viewer()
    loader = open_in_napari_spatialdata(sd.read_zarr(rich_store))
    qtbot.waitUntil(lambda: "he" in _layer_names(viewer), timeout=LOAD_TIMEOUT_MS)
    assert len(viewer.layers) < len(STORE_LAYERS)  # still loading
    viewer.layers.clear()
    qtbot.waitUntil(lambda: not loader.worker.is_running, timeout=LOAD_TIMEOUT_MS)
    qtbot.wait(200)  # layers the worker handed over just before stopping are delivered by now
    assert loader.cancelled and _layer_names(viewer) == []

    # another store opened while the first loads: only the second's layers appear
    first = open_in_napari_spatialdata(sd.read_zarr(rich_store))
    qtbot.waitUntil(lambda: "he" in _layer_names(viewer), timeout=LOAD_TIMEOUT_MS)
    viewer.layers.clear()
    second = open_in_napari_spatialdata(sd.read_zarr(rich_store))
    qtbot.waitUntil(lambda: second.done and not first.worker.is_running, timeout=LOAD_TIMEOUT_MS)
    qtbot.wait(200)
    assert first.cancelled and _layer_names(viewer) == STORE_LAYERS
    assert all(layer in second.layers for layer in viewer.layers)


@needs_display
def test_second_store_opened_beside_the_first_can_be_removed_and_closed(qtbot, rich_store: Path) -> None:
    """Each open docks its own napari-spatialdata widgets, whose viewer model drops its bookkeeping of a layer on
    removal: the second's must skip the first store's layers, which it never recorded, or removing one (or closing the
    viewer) raised a KeyError that aborted ``viewer.close()`` and left the window, and napari's event loop, running."""
    import napari
    import spatialdata as sd

    from hest_spatialdata.napari._spatialdata_view import open_in_napari_spatialdata

    viewer = napari.Viewer(show=False)
    try:
        first = open_in_napari_spatialdata(sd.read_zarr(rich_store))
        qtbot.waitUntil(lambda: first.done, timeout=LOAD_TIMEOUT_MS)
        second = open_in_napari_spatialdata(sd.read_zarr(rich_store))  # beside the first's layers
        qtbot.waitUntil(lambda: second.done, timeout=LOAD_TIMEOUT_MS)
        assert len(viewer.layers) == 2 * len(STORE_LAYERS)
        viewer.layers.remove("spots")  # the first store's napari-spatialdata layer
        assert "spots" not in _layer_names(viewer)
    finally:
        viewer.close()  # removes every layer first
    assert len(viewer.layers) == 0


@needs_display
def test_closing_the_viewer_while_loading_cancels_the_load(qtbot, rich_store: Path) -> None:
    import napari
    import spatialdata as sd

    from hest_spatialdata.napari._spatialdata_view import open_in_napari_spatialdata

    viewer = napari.Viewer(show=False)
    loader = open_in_napari_spatialdata(sd.read_zarr(rich_store))
    qtbot.waitUntil(lambda: "he" in _layer_names(viewer), timeout=LOAD_TIMEOUT_MS)
    viewer.close()
    qtbot.waitUntil(lambda: loader.cancelled, timeout=10_000)
    qtbot.waitUntil(lambda: loader.finished, timeout=LOAD_TIMEOUT_MS)
    assert len(loader.layers) < len(STORE_LAYERS)


def test_napari_spatialdata_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails loudly when a napari-spatialdata release changes what the adapter uses (then: update the adapter)."""
    from packaging.version import Version

    from hest_spatialdata.napari import _napari_spatialdata_adapter as adapter

    adapter.check_internals()  # the installed release is supported and has every internal used
    monkeypatch.setattr(adapter, "napari_spatialdata_version", lambda: Version("0.8.0"))
    with pytest.raises(adapter.UnsupportedNapariSpatialData, match="0.8.0"):
        adapter.check_internals()
    monkeypatch.undo()
    monkeypatch.setitem(adapter.INTERNALS, "SpatialDataViewer", ("get_sdata_image", "get_sdata_renamed"))
    with pytest.raises(adapter.UnsupportedNapariSpatialData, match="get_sdata_renamed"):
        adapter.check_internals()


@needs_display
def test_open_hest_root_and_files_writes_nothing(make_napari_viewer, hest_root: Path) -> None:
    before = _files(hest_root)
    viewer = make_napari_viewer()
    layers = viewer.open(hest_root / "wsis" / f"{EXAMPLE_SAMPLE_ID}.tif", plugin=PLUGIN)
    assert [layer.name for layer in layers] == SAMPLE_LAYERS
    assert viewer.layers["he"].multiscale
    viewer.layers.clear()
    assert [layer.name for layer in viewer.open(hest_root, plugin=PLUGIN)] == SAMPLE_LAYERS
    assert _files(hest_root) == before


@needs_display
def test_open_root_with_several_samples_docks_the_browser(make_napari_viewer, hest_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "hest"
    shutil.copytree(hest_root, root)
    for folder, suffix in (("wsis", ".tif"), ("st", ".h5ad"), ("metadata", ".json")):
        shutil.copy(root / folder / f"{EXAMPLE_SAMPLE_ID}{suffix}", root / folder / f"EXAMPLE2{suffix}")
    viewer = make_napari_viewer()
    assert viewer.open(root, plugin=PLUGIN) == []
    browser = viewer.window.dock_widgets["HEST sample browser"]
    assert browser.visible_samples() == [EXAMPLE_SAMPLE_ID, "EXAMPLE2"]


@needs_display
def test_sample_data(make_napari_viewer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the example is written to ~/.cache
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "example")
    assert [layer.name for layer in layers] == SAMPLE_LAYERS
    assert (tmp_path / ".cache" / "hest-spatialdata" / "example" / "wsis" / f"{EXAMPLE_SAMPLE_ID}.tif").is_file()


@needs_display
def test_browser_lists_filters_and_opens(make_napari_viewer, qtbot, hest_root: Path) -> None:
    import pandas as pd

    from hest_spatialdata.napari._widget import HestBrowser

    viewer = make_napari_viewer()
    browser = HestBrowser(viewer, hest_dir=hest_root)
    qtbot.addWidget(browser)
    hub = pd.DataFrame(
        {
            "id": ["TENX95", "NCBI783", EXAMPLE_SAMPLE_ID],
            "organ": ["Breast", "Kidney", "Brain"],
            "species": ["Homo sapiens", "Homo sapiens", "Mus musculus"],
            "st_technology": ["Xenium", "Spatial Transcriptomics", "Visium"],
            "oncotree_code": ["IDC", None, None],
        }
    )
    browser.set_hub_catalog(hub)
    assert browser.visible_samples() == [EXAMPLE_SAMPLE_ID, "NCBI783", "TENX95"]
    assert bool(browser.catalog.loc[EXAMPLE_SAMPLE_ID, "local"]) and not browser.catalog.loc["TENX95", "local"]
    browser.set_filter("species", "Homo sapiens")
    assert browser.visible_samples() == ["NCBI783", "TENX95"]
    browser.set_filter("technology", "Xenium")
    assert browser.visible_samples() == ["TENX95"]
    assert browser.open_button.text() == "Open from the hub"
    browser.set_filter("species", None)
    browser.set_filter("technology", None)
    browser.set_filter("organ", "Brain")
    assert browser.visible_samples() == [EXAMPLE_SAMPLE_ID]
    browser.select_sample(EXAMPLE_SAMPLE_ID)
    assert browser.preview.pixmap() is not None and not browser.preview.pixmap().isNull()
    assert browser.open_button.text() == "Open"

    with qtbot.waitSignal(browser.open_selected().finished, timeout=LOAD_TIMEOUT_MS):
        pass
    assert _layer_names(viewer) == SAMPLE_LAYERS
    assert browser.gene.count() == 248
    assert browser.color_by_gene("Gad1") == "Gad1"
    assert list(viewer.layers["spots"].features.columns) == ["Gad1"]


@needs_display
def test_browser_opens_hub_samples_remotely(make_napari_viewer, qtbot, hest_root: Path, tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants
    import pandas as pd

    from hest_spatialdata.napari._widget import HestBrowser
    from hest_spatialdata.roots.remote import forget_roots

    from .hub_server import FakeHub

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    forget_roots()
    with FakeHub(hest_root) as hub:  # the example sample, served as the hub's MahmoodLab/hest
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        viewer = make_napari_viewer()
        browser = HestBrowser(viewer, hest_dir=tmp_path / "empty")
        qtbot.addWidget(browser)
        frame = pd.DataFrame({"id": [EXAMPLE_SAMPLE_ID], "organ": ["Brain"], "st_technology": ["Visium"]})
        browser.set_hub_catalog(frame)
        browser.select_sample(EXAMPLE_SAMPLE_ID)
        assert browser.open_button.text() == "Open from the hub"
        with qtbot.waitSignal(browser.open_selected().finished, timeout=LOAD_TIMEOUT_MS):
            pass
        assert _layer_names(viewer) == SAMPLE_LAYERS
        slide = f"wsis/{EXAMPLE_SAMPLE_ID}.tif"
        assert 0 < hub.sent(slide) < (hest_root / slide).stat().st_size / 2  # header and the tiles shown
    forget_roots()
    assert not (tmp_path / "empty").exists()  # nothing downloaded into the HEST root


@needs_display
def test_screenshot_shows_annotations_over_the_slide(make_napari_viewer, qtbot, rich_store: Path, tmp_path) -> None:
    import imageio.v3 as iio

    viewer = make_napari_viewer(show=True)  # show=False renders a black canvas
    viewer.window._qt_window.resize(*WINDOW_SIZE)
    viewer.open(rich_store, plugin=PLUGIN)
    qtbot.waitUntil(lambda: _layer_names(viewer) == STORE_LAYERS, timeout=LOAD_TIMEOUT_MS)
    viewer.layers[TRANSCRIPTS_SUBSAMPLE].visible = False
    viewer.reset_view()
    out = Path(os.environ.get("HEST_SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)

    def shot(name: str, visible: tuple[str, ...]) -> np.ndarray:
        for layer in viewer.layers:
            layer.visible = layer.name in visible
        qtbot.wait(700)
        image = viewer.screenshot(canvas_only=True, flash=False)[..., :3]
        iio.imwrite(out / f"napari_{name}.png", image)
        return image.astype(float)

    he = shot("he", ("he",))
    assert he.std() > 20, "blank canvas"
    slide = he[he.sum(axis=-1) > 60]  # drop the black canvas around the slide
    assert len(slide) > 0.2 * he.shape[0] * he.shape[1]
    r, g, b = slide.mean(axis=0)
    assert r > g and b > g, f"not H&E-like (pink/purple): mean RGB {r:.0f}, {g:.0f}, {b:.0f}"
    assert viewer.canvas.size[0] > 600 and viewer.canvas.size[1] > 600  # a real window's canvas

    tissue = shot("tissue", ("he", TISSUE_OUTLINE))
    changed = np.abs(tissue - he).sum(axis=-1) > 30
    assert 0.002 < changed.mean() < 0.2, "the tissue outline should be a thin line"
    assert (tissue[changed][:, 2] > tissue[changed][:, 0]).mean() > 0.8  # cyan over pink

    spots = shot("spots", ("he", "spots"))
    under = np.abs(spots - he).sum(axis=-1) > 30
    assert under.mean() > 0.05, "spots not visible"
    # translucent: where the slide is darker under a spot, the spot is darker too (the H&E shows through)
    dark, light = he.sum(axis=-1) < np.percentile(he.sum(axis=-1)[under], 30), he.sum(axis=-1) > 500
    assert spots[under & dark].sum(axis=-1).mean() < spots[under & light].sum(axis=-1).mean()

    viewer.camera.zoom *= 6  # the middle of the slide, where the nuclei are a few pixels wide
    he_zoomed = shot("he_zoomed", ("he",))
    nuclei = shot("nuclei_zoomed", ("he", NUCLEI_OUTLINES))
    outlined = np.abs(nuclei - he_zoomed).sum(axis=-1) > 60
    assert outlined.mean() > 0.02, "nuclei outlines not visible"
    # coloured by class: the outlines push the H&E towards red (Neoplastic, Epithelial), green (Inflammatory) and
    # blue (Connective), each in a good share of the outline pixels
    channel = np.argmax((nuclei - he_zoomed)[outlined], axis=-1)
    shares = np.bincount(channel, minlength=3) / len(channel)
    assert (shares > 0.05).sum() >= 2, shares
    shot("all_zoomed", tuple(SAMPLE_LAYERS))


def test_unsupported_napari_spatialdata_falls_back_to_plain_layers(rich_store: Path, monkeypatch) -> None:
    from packaging.version import Version

    from hest_spatialdata.napari import _napari_spatialdata_adapter as adapter
    from hest_spatialdata.napari._reader import read_store

    monkeypatch.setattr(adapter, "napari_spatialdata_version", lambda: Version("0.9.0"))
    layers = read_store(str(rich_store))
    assert [kwargs["name"] for _, kwargs, _ in layers] == STORE_LAYERS
