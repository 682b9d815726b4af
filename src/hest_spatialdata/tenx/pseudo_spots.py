"""HEST's Xenium pseudo-spots: transcripts pooled into 100 µm squares, streamed batch by batch.

The rule is HEST's ``pool_transcripts_xenium`` (mahmoodlab/HEST ``src/hest/readers.py`` @ afd42c3), copied exactly:

- the grid starts at the minimum ``he_x``, ``he_y`` of all transcripts; its side is ``spot_size_um / pixel_size``
  H&E px; ``m = ceil((y_max - y_min) / side)`` rows, ``n = ceil((x_max - x_min) / side)`` columns;
- a transcript goes to column ``a = floor((he_x - x_min) / side)``, row ``b = floor((he_y - y_min) / side)``,
  grid cell ``c = b * n + a``; **every** transcript counts: no quality threshold, control probes and codewords
  included (their own columns), unassigned transcripts included;
- the columns are the feature names in order of first appearance in the file (pandas' ``unique``), bytes decoded;
- ``X`` is dense ``uint16`` (HEST adds into a ``uint16`` grid: a count above 65,535 wraps; warned here);
- a square's centre is ``x_min + a * side + side / 2`` (idem y), its name ``f"{b:03d}x{a:03d}"``; empty squares are
  dropped (``sc.pp.filter_cells(min_counts=1)``, which adds ``obs["n_counts"]``).

HEST holds the whole grid (squares x features) densely while adding; here the counts are summed batch by batch
into a sparse matrix, so memory grows with the non-zero (square, feature) pairs, not with the transcripts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

#: HEST pools Xenium transcripts into squares of this side (µm): ``XeniumReader.read(spot_size_um=100.)``.
PSEUDO_SPOT_UM = 100.0


@dataclass(frozen=True)
class PseudoSpotGrid:
    """HEST's pseudo-spot grid on the H&E: origin, side (level-0 px) and size (rows x columns)."""

    x_min: float
    y_min: float
    side: float
    n_rows: int
    n_cols: int

    @classmethod
    def covering(
        cls, lo: np.ndarray, hi: np.ndarray, pixel_size_um: float, spot_size_um: float = PSEUDO_SPOT_UM
    ) -> PseudoSpotGrid:
        """The grid HEST lays over transcripts whose (he_x, he_y) range from ``lo`` to ``hi``.

        Parameters
        ----------
        lo, hi
            (x, y) minimum and maximum of the transcripts' H&E positions (level-0 px).
        pixel_size_um
            µm per level-0 H&E pixel.
        spot_size_um
            Side of the squares in µm.

        Returns
        -------
        The grid.
        """
        side = spot_size_um / pixel_size_um
        n_rows = math.ceil((hi[1] - lo[1]) / side)
        n_cols = math.ceil((hi[0] - lo[0]) / side)
        return cls(float(lo[0]), float(lo[1]), side, max(n_rows, 1), max(n_cols, 1))

    def square_of(self, xy: np.ndarray) -> np.ndarray:
        """HEST's grid cell ``c = b * n + a`` of each (he_x, he_y) row of ``xy`` (int64)."""
        a = np.floor((xy[:, 0] - self.x_min) / self.side).astype(np.int64)
        b = np.floor((xy[:, 1] - self.y_min) / self.side).astype(np.int64)
        return b * self.n_cols + a

    @property
    def capacity(self) -> int:
        """Grid cells a transcript can fall in (a point on the far edge lands one row or column past the grid)."""
        return (self.n_rows + 1) * self.n_cols + 1


class PseudoSpotPooler:
    """Adds transcripts, batch by batch, into HEST's pseudo-spot counts."""

    def __init__(self, grid: PseudoSpotGrid, n_features: int) -> None:
        self.grid, self.n_features = grid, n_features
        self.counts = sp.csr_matrix((grid.capacity, n_features), dtype=np.int64)
        self.first_seen: list[int] = []  # feature positions in order of first appearance
        self._seen = np.zeros(n_features, bool)

    def add(self, xy: np.ndarray, codes: np.ndarray) -> None:
        """Add transcripts at ``xy`` (n, 2) H&E px whose features are ``codes`` (positions in the names, >= 0)."""
        codes = np.asarray(codes, dtype=np.int64)
        if not len(codes):
            return
        used, first = np.unique(codes, return_index=True)
        new = ~self._seen[used]
        self.first_seen.extend(used[new][np.argsort(first[new])].tolist())
        self._seen[used] = True
        squares = self.grid.square_of(xy)
        keys, n = np.unique(squares * self.n_features + codes, return_counts=True)
        batch = sp.csr_matrix((n, (keys // self.n_features, keys % self.n_features)), shape=self.counts.shape)
        self.counts = self.counts + batch

    def adata(self, names: pd.Index) -> ad.AnnData:
        """The pseudo-spot AnnData, as HEST's ``pool_transcripts_xenium`` returns it.

        Parameters
        ----------
        names
            Feature names (decoded), indexed by the codes given to :meth:`add`.

        Returns
        -------
        Dense ``uint16`` ``X`` (non-empty squares x features in order of first appearance), ``obs`` with
        ``in_tissue``, ``pxl_col_in_fullres``, ``pxl_row_in_fullres``, ``array_col``, ``array_row``, ``n_counts``,
        obs names ``rrrxccc``, ``obsm["spatial"]`` the square centres (level-0 px).
        """
        order = np.asarray(self.first_seen, dtype=np.int64)
        counts = self.counts[:, order]
        if counts.nnz and counts.data.max() > np.iinfo(np.uint16).max:
            warnings.warn("a pseudo-spot counts more than 65,535 transcripts of one feature: HEST's uint16 grid "
                          "wraps such counts, and so does this table", stacklevel=2)  # fmt: skip
        counts.data = counts.data.astype(np.uint16).astype(np.int64)  # HEST's uint16 grid wraps
        counts.eliminate_zeros()
        totals = np.asarray(counts.sum(axis=1)).ravel()
        keep = np.flatnonzero(totals >= 1)
        grid = self.grid
        row, col = keep // grid.n_cols, keep % grid.n_cols
        obs = pd.DataFrame(
            {
                "in_tissue": True,
                "pxl_col_in_fullres": grid.x_min + col * grid.side + grid.side / 2,
                "pxl_row_in_fullres": grid.y_min + row * grid.side + grid.side / 2,
                "array_col": col,
                "array_row": row,
                "n_counts": totals[keep].astype(np.uint64),
            },
            index=pd.Index([f"{r:03d}x{c:03d}" for r, c in zip(row, col, strict=True)], dtype=str),
        )
        x = counts[keep].toarray().astype(np.uint16)
        adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pd.Index(np.asarray(names)[order], dtype=str)))
        adata.obsm["spatial"] = obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
        hest_qc(adata)
        return adata


def hest_qc(adata: ad.AnnData) -> None:
    """The QC columns HEST's ``HESTData`` adds to an st AnnData (``sc.pp.calculate_qc_metrics``'s main ones)."""
    x = adata.X.astype(np.int64)
    adata.obs["n_genes_by_counts"] = (x > 0).sum(axis=1)
    adata.obs["total_counts"] = x.sum(axis=1)
    adata.obs["log1p_total_counts"] = np.log1p(adata.obs["total_counts"])
    adata.var["mito"] = adata.var_names.str.lower().str.startswith("mt-")
    adata.var["n_cells_by_counts"] = (x > 0).sum(axis=0)
    adata.var["total_counts"] = x.sum(axis=0)
