"""The one place that uses napari-spatialdata beyond its public ``Interactive`` (pinned to 0.7.x).

``Interactive.add_element`` loads a layer in napari-spatialdata's own thread, drops a second request while one
runs ("Please wait ...") and says nothing when done, and the layer lands in the viewer even if the user has moved
on. We need a layer built the same way (napari-spatialdata's metadata, so its widgets colour spots by any gene and
save annotations into the store) but handed to us, to add only while its store is still wanted. So this module
calls the layer builders of napari-spatialdata's viewer model (``Interactive._sdata_widget.viewer_model``,
``get_sdata_image`` / ``get_sdata_circles``) from our own worker, as its loader thread does, and has that viewer
model's layer-removed handler skip layers it never saw inserted (those of a store opened before in the same viewer).
Nothing else in the package touches napari-spatialdata's internals;
``tests/test_napari.py::test_napari_spatialdata_adapter`` fails loudly when a release changes them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from packaging.version import Version

if TYPE_CHECKING:
    from napari.layers import Layer
    from qtpy.QtWidgets import QWidget
    from spatialdata import SpatialData

#: napari-spatialdata releases this adapter was written and tested against: [low, high).
SUPPORTED_VERSIONS = (Version("0.7"), Version("0.8"))
#: The private / internal names used, checked by :func:`check_internals`.
INTERNALS = {
    "Interactive": ("_sdata_widget",),
    "SdataWidget": ("viewer_model", "coordinate_system_widget"),
    "SpatialDataViewer": ("get_sdata_image", "get_sdata_circles", "_on_layer_removed", "_layer_event_caches"),
}


class UnsupportedNapariSpatialData(RuntimeError):
    """The installed napari-spatialdata is not a release this adapter supports."""


def napari_spatialdata_version() -> Version:
    """The installed napari-spatialdata version."""
    return Version(version("napari-spatialdata"))


def check_internals() -> None:
    """Raise :class:`UnsupportedNapariSpatialData` if the version or an internal name used here changed."""
    found = napari_spatialdata_version()
    low, high = SUPPORTED_VERSIONS
    if not low <= found < high:
        raise UnsupportedNapariSpatialData(f"napari-spatialdata {found} is not in [{low}, {high})")
    from napari_spatialdata import Interactive
    from napari_spatialdata._sdata_widgets import SdataWidget
    from napari_spatialdata._viewer import SpatialDataViewer

    classes = {"Interactive": Interactive, "SdataWidget": SdataWidget, "SpatialDataViewer": SpatialDataViewer}
    for class_name, names in INTERNALS.items():
        owner = classes[class_name]
        instance_attrs = owner.__init__.__code__.co_names
        missing = [n for n in names if not hasattr(owner, n) and n not in instance_attrs]
        if missing:
            raise UnsupportedNapariSpatialData(f"napari-spatialdata {found}: {class_name} has no {missing}")


def ensure_anndata_compat() -> None:
    """Give ``AnnData`` the private ``_get_X(layer=)`` that napari-spatialdata 0.7's gene picker calls.

    anndata 0.13 removed it, and the "View" widget's picker (``DataModel.get_items``) then fails with an
    AttributeError: a gene could no longer colour the spots. The method returns what anndata's own did (``X``, or
    ``layers[layer]``). Only added where anndata lacks it; ``tests/test_napari.py`` runs the real picker.
    """
    from anndata import AnnData

    if not hasattr(AnnData, "_get_X"):

        def _get_X(self: AnnData, layer: str | None = None) -> Any:
            return self.X if layer is None else self.layers[layer]

        AnnData._get_X = _get_X


class SpatialDataSession:
    """napari-spatialdata's widgets docked for one SpatialData, and its layer builders.

    Parameters
    ----------
    sdata
        The SpatialData (backed by its store, so napari-spatialdata can save annotations into it).
    coordinate_system
        Coordinate system selected in its widget.
    """

    def __init__(self, sdata: SpatialData, coordinate_system: str) -> None:
        from napari_spatialdata import Interactive

        check_internals()
        ensure_anndata_compat()
        self.sdata = sdata
        self.coordinate_system = coordinate_system
        self.interactive = Interactive(sdata, headless=True)
        self.interactive.switch_coordinate_system(coordinate_system)
        self._widget = self.interactive._sdata_widget
        self._forget_only_layers_it_knows()

    def _forget_only_layers_it_knows(self) -> None:
        """Have napari-spatialdata's viewer model skip, on removal, the layers added before it was created.

        Each open docks new widgets whose viewer model tracks the layers inserted from then on, but its removal
        handler drops the bookkeeping of any napari-spatialdata layer removed: a layer of a store opened earlier in
        the viewer raised a KeyError there, which aborts ``viewer.layers.clear()`` and so ``viewer.close()`` (the
        window stayed open, napari's event loop running).
        """
        model = self._widget.viewer_model
        removed = model.viewer.layers.events.removed
        model_ref = weakref.ref(model)  # napari holds a function strongly (a method weakly): the model may still go

        def on_layer_removed(event: Any) -> None:
            known = model_ref()
            if known is not None and event.value.name in known._layer_event_caches:
                known._on_layer_removed(event)

        removed.disconnect(model._on_layer_removed)
        removed.connect(on_layer_removed)

    @property
    def widget(self) -> QWidget:
        """napari-spatialdata's "SpatialData" dock widget (destroyed with the viewer's window)."""
        return self._widget

    def image_layer(self, element: str) -> Layer:
        """An image element as napari-spatialdata builds it (callable from a worker thread, as its loader does)."""
        return self._widget.viewer_model.get_sdata_image(self.sdata, element, self.coordinate_system, False)

    def circles_layer(self, element: str) -> Layer:
        """A shapes element of circles as napari-spatialdata builds it (a Points layer, linked to its table)."""
        return self._widget.viewer_model.get_sdata_circles(self.sdata, element, self.coordinate_system, False)

    def on_coordinate_system_changed(self, callback: Callable[[str], Any]) -> None:
        """Call ``callback(name)`` when the user picks another coordinate system in napari-spatialdata's widget."""

        def changed(item: Any) -> None:
            if item is not None:
                self.coordinate_system = item.text()
                callback(item.text())

        self._widget.coordinate_system_widget.currentItemChanged.connect(changed)
