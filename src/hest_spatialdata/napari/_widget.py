"""The HEST sample browser: pick a sample by organ, species and technology, preview it, open it.

Samples come from a local HEST root (its metadata JSONs) and, on request, from the hub's HEST-1k catalog
(:func:`hest_spatialdata.roots.hub.catalog`, imported only then). A local sample is read in place (nothing written); a
sample only on the hub is read from the hub remotely (:mod:`hest_spatialdata.roots.remote`: the slide's tiles as they
are shown, nothing downloaded but the small parts, into the hub cache). Spots can then be recoloured by any gene.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from napari.layers import Layer
from napari.qt.threading import create_worker
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from hest_spatialdata._constants import CoordinateSystems, Elements
from hest_spatialdata.napari import _catalog
from hest_spatialdata.napari._layers import color_spots_by_gene, genes_by_expression, spots_table

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from hest_spatialdata.napari._layers import LayerDataTuple

ANY = "(any)"
#: Where a sample only in the hub's catalog is read from (remotely, nothing downloaded).
HUB_ROOT = "hf://datasets/MahmoodLab/hest"


class HestBrowser(QWidget):
    """Browse HEST samples (local HEST root and/or hub catalog), preview and open them.

    Parameters
    ----------
    napari_viewer
        The viewer to open samples in.
    hest_dir
        A HEST root to list (and to download hub samples into).
    """

    def __init__(self, napari_viewer: napari.Viewer, hest_dir: str | Path | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.hest_dir: Path | None = None
        self._local: pd.DataFrame | None = None
        self._hub: pd.DataFrame | None = None
        self.catalog = _catalog.merge_catalogs(None, None)
        self.worker: FunctionWorker | None = None
        self.spots_layer: Layer | None = None
        self._thumbnail: np.ndarray | None = None
        self._build()
        if hest_dir is not None:
            self.set_hest_dir(hest_dir)

    # ----------------------------------------------------------------------------------------- layout

    def _build(self) -> None:
        self.root_edit = QLineEdit(placeholderText="HEST root (wsis/, st/, metadata/ ...)")
        self.root_edit.returnPressed.connect(lambda: self.set_hest_dir(self.root_edit.text()))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._choose_root)
        root_row = QHBoxLayout()
        root_row.addWidget(self.root_edit)
        root_row.addWidget(browse)
        self.hub_button = QPushButton("Load HEST-1k catalog from the hub")
        self.hub_button.clicked.connect(self.load_hub_catalog)

        self.filters = {name: QComboBox() for name in _catalog.FILTERS}
        form = QFormLayout()
        for name, combo in self.filters.items():
            combo.currentIndexChanged.connect(self._refresh_list)
            form.addRow(name.capitalize(), combo)

        self.sample_list = QListWidget()
        self.sample_list.currentItemChanged.connect(self._on_select)
        self.sample_list.itemDoubleClicked.connect(lambda _: self.open_selected())
        self.preview = QLabel(alignment=Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumHeight(_catalog.THUMBNAIL_SIDE // 2)
        self.info = QLabel(wordWrap=True)
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self.open_selected)
        self.gene = QComboBox(editable=True)
        self.gene.setToolTip("Colour the spots by this gene (genes sorted by total counts)")
        self.gene.activated.connect(lambda _: self.color_by_gene(self.gene.currentText()))
        gene_row = QFormLayout()
        gene_row.addRow("Spots colour", self.gene)
        self.status = QLabel(wordWrap=True)

        layout = QVBoxLayout(self)
        layout.addLayout(root_row)
        layout.addWidget(self.hub_button)
        layout.addLayout(form)
        for widget in (self.sample_list, self.preview, self.info, self.open_button):
            layout.addWidget(widget)
        layout.addLayout(gene_row)
        layout.addWidget(self.status)

    def _choose_root(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "HEST root", str(self.hest_dir or Path.home()))
        if folder:
            self.set_hest_dir(folder)

    # ----------------------------------------------------------------------------------------- catalog

    def set_hest_dir(self, hest_dir: str | Path) -> None:
        """List the samples of a local HEST root (and download hub samples into it), or the stores at a URL."""
        from hest_spatialdata.storage.locations import is_url

        if is_url(hest_dir):  # a folder of stores in object storage: open them, nothing to download into
            self.root_edit.setText(str(hest_dir))
            self._local = _catalog.store_catalog(str(hest_dir))
            self.status.setText(f"{len(self._local)} store(s) in {hest_dir}")
            self._update_catalog()
            return
        path = Path(hest_dir).expanduser()
        if not path.is_dir():
            self.status.setText(f"not a folder: {path}")
            return
        self.hest_dir = path
        self.root_edit.setText(str(path))
        self._local = _catalog.merge_catalogs(_catalog.local_catalog(path), _catalog.store_catalog(path))
        self.status.setText(f"{len(self._local)} sample(s) in {path}")
        self._update_catalog()

    def set_hub_catalog(self, frame: pd.DataFrame) -> None:
        """Show a HEST catalog (the hub's CSV as ``hub.catalog`` returns it, or already in the browser's columns)."""
        self._hub = frame if "local" in frame.columns else _catalog.catalog_from_frame(frame)
        self._update_catalog()

    def load_hub_catalog(self) -> None:
        """Fetch the HEST-1k catalog from the hub (cached by huggingface_hub) in a worker thread."""
        self.status.setText("Loading the HEST-1k catalog ...")
        self.hub_button.setEnabled(False)
        worker = create_worker(_catalog.hub_catalog)
        worker.returned.connect(self.set_hub_catalog)
        worker.errored.connect(lambda e: self.status.setText(f"hub catalog unavailable: {e}"))
        worker.finished.connect(lambda: self.hub_button.setEnabled(True))
        self.worker = worker
        worker.start()

    def visible_samples(self) -> list[str]:
        """Sample ids listed (after filtering), in order."""
        return [self.sample_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.sample_list.count())]

    def set_filter(self, name: str, value: str | None) -> None:
        """Select a filter value (``None``: any)."""
        combo = self.filters[name]
        combo.setCurrentIndex(max(0, combo.findText(value)) if value else 0)

    def _update_catalog(self) -> None:
        self.catalog = _catalog.merge_catalogs(self._local, self._hub)
        for name, combo in self.filters.items():
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([ANY, *_catalog.filter_values(self.catalog, name)])
            combo.setCurrentIndex(max(0, combo.findText(current)))
            combo.blockSignals(False)
        self._refresh_list()

    def _refresh_list(self) -> None:
        wanted = {name: (c.currentText() if c.currentIndex() > 0 else None) for name, c in self.filters.items()}
        rows = _catalog.filter_catalog(self.catalog, **wanted)
        self.sample_list.clear()
        for sample_id, row in rows.iterrows():
            details = ", ".join(str(v) for v in (row["organ"], row["technology"]) if isinstance(v, str))
            item = QListWidgetItem(f"{sample_id}  {details}{'' if row['local'] else '  (hub)'}")
            item.setData(Qt.ItemDataRole.UserRole, sample_id)
            self.sample_list.addItem(item)
        if self.sample_list.count():
            self.sample_list.setCurrentRow(0)
        else:
            self._on_select(None)

    # ----------------------------------------------------------------------------------------- selection

    def selected_sample(self) -> str | None:
        """The id of the selected sample."""
        item = self.sample_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def select_sample(self, sample_id: str) -> None:
        """Select a listed sample."""
        ids = self.visible_samples()
        if sample_id not in ids:
            raise KeyError(f"{sample_id} is not listed (filters: {[c.currentText() for c in self.filters.values()]})")
        self.sample_list.setCurrentRow(ids.index(sample_id))

    def _on_select(self, item: QListWidgetItem | None) -> None:
        sample_id = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        self.open_button.setEnabled(sample_id is not None)
        if sample_id is None:
            self.info.setText("")
            self._show_thumbnail(None)
            return
        row = self.catalog.loc[sample_id]
        fields = ("organ", "species", "technology", "oncotree_code")
        self.info.setText(" · ".join(str(row[f]) for f in fields if isinstance(row[f], str)))
        local = bool(row["local"]) and self.hest_dir is not None
        self.open_button.setText("Open" if local else "Open from the hub")
        self._show_thumbnail(_catalog.thumbnail(self.hest_dir, sample_id) if local else None)

    def _show_thumbnail(self, image: np.ndarray | None) -> None:
        if image is None:
            self.preview.setPixmap(QPixmap())
            self.preview.setText("no preview")
            return
        self._thumbnail = np.ascontiguousarray(image)  # QImage does not copy the buffer
        h, w = self._thumbnail.shape[:2]
        qimage = QImage(self._thumbnail.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        self.preview.setPixmap(QPixmap.fromImage(qimage))

    # ----------------------------------------------------------------------------------------- opening

    def open_selected(self) -> FunctionWorker | None:
        """Open the selected sample (downloading it first if it is only on the hub), in a worker thread."""
        sample_id = self.selected_sample()
        store = self.catalog["store"].get(sample_id) if "store" in self.catalog.columns else None
        if isinstance(store, str):  # a converted store: napari-spatialdata through the store reader
            self.viewer.open(store, plugin="hest-spatialdata")
            return None
        return self.open_sample(sample_id) if sample_id is not None else None

    def open_sample(self, sample_id: str, *, gene: str | None = None) -> FunctionWorker:
        """Read a sample in a worker thread and add its layers to the viewer.

        Parameters
        ----------
        sample_id
            A listed sample id.
        gene
            Gene colouring the spots (default: the most expressed).

        Returns
        -------
        The worker; layers are added when it returns.
        """
        local = bool(self.catalog.loc[sample_id, "local"]) if sample_id in self.catalog.index else True
        if local and self.hest_dir is None:
            raise ValueError("choose a HEST root first")
        root = self.hest_dir if local else HUB_ROOT
        self.status.setText(f"Opening {sample_id}{'' if local else ' from the hub'} ...")
        self.open_button.setEnabled(False)
        worker = create_worker(_load_sample, root, sample_id, gene=gene)
        worker.returned.connect(self._add_sample_layers)
        worker.errored.connect(lambda e: self.status.setText(f"{sample_id}: {e}"))
        worker.finished.connect(lambda: self.open_button.setEnabled(True))
        self.worker = worker
        worker.start()
        return worker

    def _add_sample_layers(self, loaded: tuple[str, list[LayerDataTuple]]) -> None:
        sample_id, layers = loaded
        for data, kwargs, layer_type in layers:
            layer = Layer.create(data, kwargs, layer_type)
            self.viewer.add_layer(layer)
            if kwargs["name"] == Elements.SPOTS:
                self.spots_layer = layer
        if self.hest_dir is not None and not self.catalog.loc[sample_id, "local"]:
            self._local = _catalog.local_catalog(self.hest_dir)
            self._update_catalog()
        self._fill_genes()
        self.status.setText(f"{sample_id}: {', '.join(kwargs['name'] for _, kwargs, _ in layers)}")

    # ----------------------------------------------------------------------------------------- genes

    def color_by_gene(self, gene: str) -> str | None:
        """Recolour the spots (the selected spots layer, else the last opened) by a gene; returns the var name."""
        layer = self._target_spots_layer()
        if layer is None or not gene:
            return None
        try:
            used = color_spots_by_gene(layer, gene)
        except KeyError as e:
            self.status.setText(str(e.args[0]))
            return None
        self.status.setText(f"{layer.name}: coloured by {used}")
        return used

    def _target_spots_layer(self) -> Layer | None:
        active = self.viewer.layers.selection.active
        if active is not None and "indices" in active.metadata and spots_table(active) is not None:
            return active
        if self.spots_layer is not None and self.spots_layer in self.viewer.layers:
            return self.spots_layer
        return None

    def _fill_genes(self) -> None:
        layer = self._target_spots_layer()
        table = spots_table(layer) if layer is not None else None
        self.gene.clear()
        if table is None:
            return
        self.gene.addItems(genes_by_expression(table))
        shown = [c for c in layer.features.columns if c in table.var_names]
        if shown:
            self.gene.setCurrentText(shown[0])


def _load_sample(hest_dir: Path | str, sample_id: str, *, gene: str | None) -> tuple[str, list[LayerDataTuple]]:
    """Worker: read the sample lazily (from a local root, or remotely from the hub) into layer data."""
    from hest_spatialdata.napari._layers import hest_sample_layers

    return sample_id, hest_sample_layers(hest_dir, sample_id, coordinate_system=CoordinateSystems.GLOBAL, gene=gene)
