"""Open a HEST SpatialData in napari-spatialdata and load its default layers through it.

napari-spatialdata adds layers from one loader thread at a time (a second request while it runs is dropped with
"Please wait ..."), so the default elements are queued and each is requested when the previous one has finished.
Elements napari-spatialdata cannot show well are added as our own layers, built in a napari worker thread: the
transcripts (it would load every transcript into memory before subsampling) and very many nuclei (as centroids).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.layers import Layer
from napari.qt.threading import create_worker
from napari_spatialdata import Interactive

from hest_spatialdata._constants import CoordinateSystems, Elements
from hest_spatialdata.napari._layers import (
    MAX_NUCLEI_POLYGONS,
    TISSUE_COLOR,
    LayerDataTuple,
    color_nuclei_by_class,
    color_spots_by_gene,
    element_affine,
    most_expressed_gene,
    nuclei_layer,
    spots_table,
    transcripts_layer,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Elements shown through napari-spatialdata, bottom to top.
LINKED_ELEMENTS = (Elements.HE, Elements.TISSUE, Elements.SPOTS, Elements.NUCLEI)


def open_in_napari_spatialdata(
    sdata: SpatialData,
    *,
    coordinate_system: str = CoordinateSystems.GLOBAL,
    gene: str | None = None,
    max_nuclei_polygons: int = MAX_NUCLEI_POLYGONS,
) -> Interactive:
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
        Above this many nuclei, draw centroids (our own layer) instead of napari-spatialdata's polygons.

    Returns
    -------
    The napari-spatialdata ``Interactive``; layers keep arriving after this returns.
    """
    interactive = Interactive(sdata, headless=True)
    interactive.switch_coordinate_system(coordinate_system)
    loader = DefaultLayerLoader(interactive, sdata, coordinate_system, gene, max_nuclei_polygons)
    interactive._sdata_widget._hest_loader = loader  # keep it alive as long as the widget
    loader.start()
    return interactive


class DefaultLayerLoader:
    """Request the default elements one by one through napari-spatialdata, then add our own layers.

    Parameters
    ----------
    interactive
        The napari-spatialdata session.
    sdata
        Its SpatialData.
    coordinate_system
        Coordinate system of the layers.
    gene
        Gene colouring the spots (default: the most expressed).
    max_nuclei_polygons
        Above this many nuclei, show centroids as our own layer.
    """

    def __init__(
        self,
        interactive: Interactive,
        sdata: SpatialData,
        coordinate_system: str,
        gene: str | None,
        max_nuclei_polygons: int,
    ) -> None:
        self.interactive = interactive
        self.sdata = sdata
        self.coordinate_system = coordinate_system
        self.gene = gene
        self.max_nuclei_polygons = max_nuclei_polygons
        self.viewer = interactive._viewer
        self.widget = interactive._sdata_widget
        names = _element_names(sdata)
        many_nuclei = Elements.NUCLEI in sdata.shapes and len(sdata.shapes[Elements.NUCLEI]) > max_nuclei_polygons
        self.pending = [str(e) for e in LINKED_ELEMENTS if e in names and not (e == Elements.NUCLEI and many_nuclei)]
        # ours: the transcript subsample, and nuclei as centroids when there are too many polygons
        self.own = [e for e in (Elements.NUCLEI, Elements.TRANSCRIPTS) if e in names]
        self.own = [e for e in self.own if e != Elements.NUCLEI or many_nuclei]
        self.own_layers: list[Layer] = []
        self.done = False

    def start(self) -> None:
        """Start loading; returns at once."""
        self.widget.worker_thread.returned.connect(self._style)
        self.widget.worker_thread.finished.connect(self._next)
        self.widget.coordinate_system_widget.currentItemChanged.connect(self._follow_coordinate_system)
        self._next()

    def _next(self) -> None:
        thread = self.widget.worker_thread
        if thread.isRunning():  # "finished" arrives just before the thread has fully stopped
            thread.wait()
        if self.pending:
            self.interactive.add_element(self.pending.pop(0), self.coordinate_system)
            return
        thread.returned.disconnect(self._style)
        thread.finished.disconnect(self._next)
        self._start_own_layers()

    def _style(self, layer: Layer) -> None:
        name = layer.metadata.get("name")
        if name == Elements.SPOTS and spots_table(layer) is not None:
            self.gene = color_spots_by_gene(layer, self.gene or most_expressed_gene(spots_table(layer)))
        elif name == Elements.NUCLEI:
            color_nuclei_by_class(layer)
        elif name == Elements.TISSUE:
            layer.face_color = "transparent"
            layer.edge_color = TISSUE_COLOR
            layer.edge_width = max(2.0, 0.002 * max(layer.extent.data[1] - layer.extent.data[0]))

    def _start_own_layers(self) -> None:
        if not self.own:
            self.done = True
            return
        worker = create_worker(self._build_own_layers)
        worker.returned.connect(self._add_own_layers)
        worker.start()

    def _build_own_layers(self) -> list[LayerDataTuple]:
        builders = {
            Elements.NUCLEI: lambda: nuclei_layer(self.sdata, self.coordinate_system, max_polygons=0),
            Elements.TRANSCRIPTS: lambda: transcripts_layer(self.sdata, self.coordinate_system),
        }
        return [builders[element]() for element in self.own]

    def _add_own_layers(self, layers: list[LayerDataTuple]) -> None:
        for data, kwargs, layer_type in layers:
            layer = Layer.create(data, kwargs, layer_type)
            layer.metadata["hest_base_size"] = layer.size / _scale(layer.affine.affine_matrix)
            self.viewer.add_layer(layer)
            self.own_layers.append(layer)
        self.done = True

    def _follow_coordinate_system(self, item: Any) -> None:
        """Move our own layers along when the user switches coordinate system in napari-spatialdata's widget."""
        if item is None:
            return
        for layer in self.own_layers:
            element = self.sdata[layer.metadata["hest"]["element"]]
            if item.text() not in _coordinate_systems(element):
                layer.visible = False
                continue
            affine = element_affine(element, item.text())
            layer.affine = affine
            layer.size = layer.metadata["hest_base_size"] * _scale(affine)
            layer.visible = True


def _element_names(sdata: SpatialData) -> set[str]:
    return {name for _, name, _ in sdata.gen_spatial_elements()}


def _coordinate_systems(element: Any) -> set[str]:
    from spatialdata.transformations import get_transformation

    return set(get_transformation(element, get_all=True))


def _scale(affine: Any) -> float:
    import numpy as np

    return float(np.sqrt(abs(np.linalg.det(np.asarray(affine)[:2, :2]))))
