"""Open a HEST SpatialData in napari with napari-spatialdata's widgets, and load its default layers in one worker.

The H&E (napari-spatialdata's layer, so its widgets save annotations into the store) is added at once, in the main
thread. The other default layers are built one after the other in a napari worker thread and added, bottom to top,
as each is ready: the spots as napari-spatialdata builds them (its "View" widget then recolours them by any gene;
see :mod:`._napari_spatialdata_adapter`), then our own: the tissue (contours simplified for display), the nuclei
(outlines by class from a labels pyramid, at any count) and a transcript subsample.

A load belongs to its viewer and is cancelled, its pending layers never added, when the user removes one of its
layers or clears the viewer, opens another store in the same viewer, or closes the viewer.
"""

from __future__ import annotations

import contextlib
import html
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from napari.layers import Layer
from napari.qt.threading import create_worker

from hest_spatialdata._constants import CoordinateSystems, Elements
from hest_spatialdata.napari._layers import (
    MAX_NUCLEI_POLYGONS,
    NUCLEI_OUTLINES,
    color_spots_by_gene,
    draw_spots_as_rings,
    element_affine,
    most_expressed_gene,
    nuclei_layer,
    spots_table,
    tissue_layer,
    transcripts_layer,
    use_compiled_triangulation,
)
from hest_spatialdata.napari._napari_spatialdata_adapter import SpatialDataSession
from hest_spatialdata.views._palette import nucleus_color

if TYPE_CHECKING:
    import napari
    from qtpy.QtWidgets import QLabel
    from spatialdata import SpatialData

log = logging.getLogger(__name__)
#: Name of the dock widget of the nuclei class legend.
LEGEND_NAME = "Nuclei classes"
#: The load under way in each viewer (a new one cancels the previous).
_LOADS: weakref.WeakKeyDictionary[Any, DefaultLayerLoader] = weakref.WeakKeyDictionary()


def open_in_napari_spatialdata(
    sdata: SpatialData,
    *,
    coordinate_system: str = CoordinateSystems.GLOBAL,
    gene: str | None = None,
    max_nuclei_polygons: int = MAX_NUCLEI_POLYGONS,
) -> DefaultLayerLoader:
    """Dock napari-spatialdata's widgets for ``sdata`` in the current viewer and load the default layers.

    Parameters
    ----------
    sdata
        A HEST SpatialData object, ideally backed by its store (napari-spatialdata saves annotations into it).
    coordinate_system
        Coordinate system selected and the layers are placed in.
    gene
        Gene colouring the spots (default: the most expressed).
    max_nuclei_polygons
        Up to this many nuclei, draw them as Shapes polygons; above, as outlines from a labels pyramid.

    Returns
    -------
    The load; layers keep arriving after this returns (``loader.worker`` finishes when all are added).
    """
    use_compiled_triangulation()
    session = SpatialDataSession(sdata, coordinate_system)
    loader = DefaultLayerLoader(session.interactive._viewer, session, gene, max_nuclei_polygons)
    loader.start()
    return loader


class DefaultLayerLoader:
    """Build the default layers in a worker and add them while the load is still wanted.

    Parameters
    ----------
    viewer
        The napari viewer.
    session
        napari-spatialdata's widgets and layer builders for the SpatialData.
    gene
        Gene colouring the spots (default: the most expressed).
    max_nuclei_polygons
        Up to this many nuclei, Shapes polygons; above, outlines from a labels pyramid.
    """

    def __init__(
        self, viewer: napari.Viewer, session: SpatialDataSession, gene: str | None, max_nuclei_polygons: int
    ) -> None:
        self.viewer = viewer
        self.session = session
        self.sdata = session.sdata
        self.gene = gene
        self.max_nuclei_polygons = max_nuclei_polygons
        self.layers: list[Layer] = []
        self.own_layers: list[Layer] = []
        self.cancelled = False
        self.finished = False
        self.legend: Any = None
        self.worker: Any = None

    def plan(self) -> list[tuple[str, Callable[[], Layer]]]:
        """The default layers built in the worker, bottom to top: ``(element, builder)`` (the H&E is not one)."""
        sdata, names = self.sdata, _element_names(self.sdata)
        steps: list[tuple[str, Callable[[], Layer]]] = []
        if Elements.TISSUE in sdata.shapes:
            steps.append((Elements.TISSUE, lambda: self._own(tissue_layer(sdata, self.coordinate_system))))
        if Elements.SPOTS in sdata.shapes:
            steps.append((Elements.SPOTS, self._spots_layer))
        if Elements.NUCLEI in sdata.shapes:
            steps.append((Elements.NUCLEI, self._nuclei_layer))
        if Elements.TRANSCRIPTS in names:
            steps.append((Elements.TRANSCRIPTS, lambda: self._own(transcripts_layer(sdata, self.coordinate_system))))
        return steps

    @property
    def coordinate_system(self) -> str:
        """The coordinate system the layers are placed in (follows napari-spatialdata's widget)."""
        return self.session.coordinate_system

    def start(self) -> None:
        """Start loading (cancelling the previous load in this viewer); returns at once."""
        previous = _LOADS.get(self.viewer)
        if previous is not None:
            previous.cancel()
            previous.remove_legend()
        _LOADS[self.viewer] = self
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.session.widget.destroyed.connect(self.cancel)  # the viewer's window was closed
        self.session.on_coordinate_system_changed(self._follow_coordinate_system)
        if Elements.HE in self.sdata.images:
            # In the main thread, at once: a pyramid reads only its coarsest tiles. Built in a worker, its first
            # slice would race napari's dask cache (not thread-safe) over the same tiles as the canvas.
            self._add(self.session.image_layer(Elements.HE.value))
        self.worker = create_worker(self._build, _start_thread=False)
        self.worker.yielded.connect(self._add)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def cancel(self, *_: Any) -> None:
        """Stop loading: layers not yet added never will be."""
        if self.cancelled:
            return
        self.cancelled = True
        if self.worker is not None:
            self.worker.quit()
        with contextlib.suppress(RuntimeError, TypeError, ValueError):  # already gone with the viewer
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)

    @property
    def done(self) -> bool:
        """Whether every default layer was added, or the load cancelled (its worker may still be stopping)."""
        return self.cancelled or self.finished

    def _on_finished(self) -> None:
        self.finished = True

    def _build(self) -> Iterator[Layer]:
        """In the worker: build each layer and hand it to the main thread (stops when cancelled)."""
        for element, build in self.plan():
            if self.cancelled:
                return
            try:
                layer = build()
            except Exception:  # one broken element must not hide the others
                log.exception("could not build the %s layer", element)
                continue
            yield layer

    def _add(self, layer: Layer) -> None:
        """In the main thread: add a layer if the load is still wanted."""
        if self.cancelled:
            return
        self.viewer.add_layer(layer)
        self.layers.append(layer)
        if layer.name == NUCLEI_OUTLINES:
            self._dock_legend(layer)

    def _dock_legend(self, layer: Layer) -> None:
        classes = layer.metadata.get("classes")
        if classes is None:  # Shapes polygons: the categories of their class feature
            classes = [str(c) for c in layer.features["class"].cat.categories]
        self.legend = class_legend(classes)
        self.viewer.window.add_dock_widget(self.legend, name=LEGEND_NAME, area="right")

    def remove_legend(self) -> None:
        """Undock the nuclei class legend of this load, if any."""
        if self.legend is not None:
            with contextlib.suppress(RuntimeError, KeyError, ValueError):  # already gone with the window
                self.viewer.window.remove_dock_widget(self.legend)
            self.legend = None

    def _on_layer_removed(self, event: Any) -> None:
        if any(event.value is layer for layer in self.layers) or not len(self.viewer.layers):
            self.cancel()

    def _own(self, data: tuple[Any, dict[str, Any], str]) -> Layer:
        layer = Layer.create(*data)
        layer.metadata["hest_base_size"] = getattr(layer, "size", 1.0) / _scale(layer.affine.affine_matrix)
        self.own_layers.append(layer)
        return layer

    def _spots_layer(self) -> Layer:
        from hest_spatialdata.napari._layers import spots_layer

        spots = self.sdata.shapes[Elements.SPOTS]
        if not (spots.geometry.geom_type == "Point").all():  # square pseudo-spots: our Points, not Shapes
            return self._own(spots_layer(self.sdata, self.coordinate_system, gene=self.gene))
        layer = self.session.circles_layer(Elements.SPOTS.value)
        draw_spots_as_rings(layer)
        table = spots_table(layer)
        if table is not None and table.n_vars:
            self.gene = color_spots_by_gene(layer, self.gene or most_expressed_gene(table))
        return layer

    def _nuclei_layer(self) -> Layer:
        return self._own(nuclei_layer(self.sdata, self.coordinate_system, max_polygons=self.max_nuclei_polygons))

    def _follow_coordinate_system(self, coordinate_system: str) -> None:
        """Move our own layers along when the user switches coordinate system in napari-spatialdata's widget."""
        for layer in self.own_layers:
            element = self.sdata[layer.metadata["hest"]["element"]]
            if coordinate_system not in _coordinate_systems(element):
                layer.visible = False
                continue
            affine = element_affine(element, coordinate_system)
            layer.affine = affine
            if hasattr(layer, "size"):
                layer.size = layer.metadata["hest_base_size"] * _scale(affine)
            layer.visible = True


def class_legend(classes: list[str]) -> QLabel:
    """A legend of the nuclei classes: a square in each class' colour, then its name."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QLabel

    rows = "".join(f'<span style="color:{nucleus_color(c)}">&#9632;</span> {html.escape(c)}<br>' for c in classes)
    label = QLabel(f"<b>Nuclei by CellViT class</b><br>{rows}")
    label.setTextFormat(Qt.TextFormat.RichText)
    label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    return label


def _element_names(sdata: SpatialData) -> set[str]:
    return {name for _, name, _ in sdata.gen_spatial_elements()}


def _coordinate_systems(element: Any) -> set[str]:
    from spatialdata.transformations import get_transformation

    return set(get_transformation(element, get_all=True))


def _scale(affine: Any) -> float:
    import numpy as np

    return float(np.sqrt(abs(np.linalg.det(np.asarray(affine)[:2, :2]))))
