"""The colours of a HEST sample, shared by the napari plugin and the ``plot`` command (one place for both).

Spots are coloured by a gene's counts on a robust scale: ``log1p`` of the counts, the colormap spanning the 1st to
99th percentile (a few very high spots no longer push every other spot to the darkest colour). Nuclei are coloured
by their CellViT class, the tissue is an outline.
"""

from __future__ import annotations

import numpy as np

#: Colormap of gene expression (napari and matplotlib both know it by this name).
GENE_COLORMAP = "viridis"
#: Percentiles of a gene's counts at the two ends of the colormap.
GENE_PERCENTILES = (1.0, 99.0)
#: Opacity of the spots over the H&E (which stays visible under them), where they are drawn filled (``plot``).
SPOTS_OPACITY = 0.7
#: In napari the spots are rings of their colour, the H&E seen whole inside them: the ring's width, a fraction of
#: the spot's diameter.
SPOTS_RING_WIDTH = 0.14
#: CellViT (PanNuke) classes, in CellViT's own colours.
NUCLEUS_CLASS_COLORS = {
    "Neoplastic": "#ff0000",
    "Inflammatory": "#22dd4c",
    "Connective": "#235cec",
    "Dead": "#feff00",
    "Epithelial": "#ff9f44",
}
#: Nuclei of a class without a colour of its own (and nuclei without class).
OTHER_NUCLEUS_COLOR = "#7f7f7f"
#: Outline of the tissue contours.
TISSUE_COLOR = "#00e5ff"
#: tab20, for categories without a fixed colour (transcript features).
PALETTE = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
    "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
)  # fmt: skip


def nucleus_color(cls: str) -> str:
    """The colour of a CellViT class (grey for other classes)."""
    return NUCLEUS_CLASS_COLORS.get(str(cls), OTHER_NUCLEUS_COLOR)


def gene_limits(counts: np.ndarray) -> tuple[float, float]:
    """Counts at the two ends of the colormap: the :data:`GENE_PERCENTILES` of ``counts`` (``high > low``)."""
    counts = np.asarray(counts, float)
    counts = counts[np.isfinite(counts)]
    if not len(counts):
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(counts, GENE_PERCENTILES))
    if high <= low:
        high = low + 1.0
    return low, high


def gene_scale(counts: np.ndarray) -> np.ndarray:
    """Counts mapped to [0, 1] for the colormap: ``log1p``, between the :func:`gene_limits`, clipped."""
    counts = np.asarray(counts, float)
    low, high = (np.log1p(max(v, 0.0)) for v in gene_limits(counts))
    scaled = (np.log1p(np.clip(counts, 0.0, None)) - low) / (high - low)
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0)
