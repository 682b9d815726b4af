"""Quick-look figure of a HEST store with spatialdata-plot: H&E, spots coloured by a gene, nuclei by class.

Needs the ``plot`` extra (``pip install "hest-spatialdata[plot]"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hest_spatialdata._constants import CoordinateSystems, Elements
from hest_spatialdata._expression import most_expressed_gene, resolve_gene
from hest_spatialdata.views._palette import (
    GENE_COLORMAP,
    NUCLEUS_CLASS_COLORS,
    SPOTS_OPACITY,
    gene_limits,
    nucleus_color,
)

if TYPE_CHECKING:
    import anndata as ad
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

NUCLEUS_PALETTE = NUCLEUS_CLASS_COLORS  # the napari plugin's colours


def quicklook(
    store: str | Path | SpatialData,
    out: str | Path,
    *,
    gene: str | None = None,
    coordinate_system: str = CoordinateSystems.GLOBAL,
    panel_size: tuple[float, float] = (6.5, 5.5),
    dpi: int = 100,
) -> Path:
    """Write a quick-look PNG of a HEST sample.

    Parameters
    ----------
    store
        A store written by hest-spatialdata (or any SpatialData with ``he`` / ``spots`` / ``table``), or the object.
    out
        The PNG to write (made absolute: spatialdata-plot would put a relative path under scanpy's figdir).
    gene
        Gene colouring the spots (a var name or an original gene name); default: the most expressed.
    coordinate_system
        ``"global"`` (level-0 pixels) or ``"microns"``.
    panel_size
        Size of one panel in inches; there is one panel for the spots and one for the nuclei where present.
    dpi
        Resolution: the PNG is ``panel_size * dpi`` pixels per panel, side by side.

    Returns
    -------
    The absolute path of the PNG.

    Raises
    ------
    KeyError
        If ``gene`` is not in the table or the coordinate system does not exist.
    """
    import matplotlib.pyplot as plt
    import spatialdata as sd

    sdata = sd.read_zarr(store) if isinstance(store, str | Path) else store
    if coordinate_system not in sdata.coordinate_systems:
        raise KeyError(
            f"no coordinate system {coordinate_system!r}; the store has {', '.join(sdata.coordinate_systems)}"
        )
    figure = quicklook_figure(sdata, gene=gene, coordinate_system=coordinate_system, panel_size=panel_size, dpi=dpi)
    path = Path(out).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, dpi=dpi)
    finally:
        plt.close(figure)
    return path


def quicklook_figure(
    sdata: SpatialData,
    *,
    gene: str | None = None,
    coordinate_system: str = CoordinateSystems.GLOBAL,
    panel_size: tuple[float, float] = (6.5, 5.5),
    dpi: int = 100,
) -> Figure:
    """The quick-look figure: H&E with spots coloured by ``gene``, and H&E with nuclei by class where present.

    Parameters
    ----------
    sdata
        A HEST SpatialData object.
    gene
        Gene colouring the spots; default: the most expressed.
    coordinate_system
        Coordinate system drawn.
    panel_size
        Size of one panel in inches.
    dpi
        Resolution.

    Returns
    -------
    The pyplot figure (close it when done), one axes per panel.
    """
    import matplotlib.pyplot as plt
    import spatialdata_plot  # noqa: F401  (registers the .pl accessor)

    panels = [_spots_panel(sdata, gene)]
    if Elements.NUCLEI in sdata.shapes and "class" in sdata.shapes[Elements.NUCLEI].columns:
        panels.append(_nuclei_panel(sdata))
    width, height = panel_size
    figure, axes = plt.subplots(
        1, len(panels), figsize=(width * len(panels), height), dpi=dpi, squeeze=False, layout="constrained"
    )
    sample_id = sdata.attrs.get("hest", {}).get("sample_id")
    for ax, (plot, title) in zip(axes.ravel(), panels, strict=True):
        plot.pl.show(coordinate_systems=coordinate_system, ax=ax, title=" · ".join(filter(None, [sample_id, title])))
        ax.set_xlabel("µm" if coordinate_system == CoordinateSystems.MICRONS else "px")
        if title.startswith("spots: "):
            gene_name = title.removeprefix("spots: ")
            _add_colorbar(figure, ax, _gene_norm(sdata.tables[Elements.TABLE], gene_name), f"{gene_name} counts")
    return figure


def _background(sdata: SpatialData) -> SpatialData:
    return sdata.pl.render_images(Elements.HE.value) if Elements.HE in sdata.images else sdata


def _spots_panel(sdata: SpatialData, gene: str | None) -> tuple[SpatialData, str]:
    plot = _background(sdata)
    if Elements.SPOTS not in sdata.shapes:
        return plot, "H&E"
    table = sdata.tables.get(Elements.TABLE)
    if table is None or not table.n_vars:
        return plot.pl.render_shapes(Elements.SPOTS.value, fill_alpha=0.5), "spots"
    gene = resolve_gene(table, gene) if gene else most_expressed_gene(table)
    colored = plot.pl.render_shapes(
        Elements.SPOTS.value,
        color=gene,
        table_name=Elements.TABLE.value,
        cmap=GENE_COLORMAP,
        norm=_gene_norm(table, gene),
        fill_alpha=SPOTS_OPACITY,
        colorbar=False,  # spatialdata-plot's lands on the next panel; ours is attached to this one
    )
    return colored, f"spots: {gene}"


def _gene_norm(table: ad.AnnData, gene: str) -> Normalize:
    """log1p of the counts between their 1st and 99th percentiles: the napari plugin's scale."""
    from matplotlib.colors import FuncNorm

    values = table[:, gene].X
    values = np.asarray(values.todense() if hasattr(values, "todense") else values, float).ravel()
    low, high = gene_limits(values)
    return FuncNorm((_log1p, np.expm1), vmin=low, vmax=high, clip=True)


def _log1p(values: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(values, 0.0, None))


def _add_colorbar(figure: Figure, ax: Axes, norm: Normalize, label: str) -> None:
    from matplotlib.cm import ScalarMappable

    figure.colorbar(ScalarMappable(norm=norm, cmap=GENE_COLORMAP), ax=ax, label=label, shrink=0.8)


def _nuclei_panel(sdata: SpatialData) -> tuple[SpatialData, str]:
    classes = sdata.shapes[Elements.NUCLEI]["class"].astype(str).unique()
    palette = {c: nucleus_color(c) for c in classes}
    plot = _background(sdata).pl.render_shapes(Elements.NUCLEI.value, color="class", palette=palette, fill_alpha=0.9)
    return plot, "nuclei by class"
