"""HEST-Benchmark's gene choice (HEST's ``get_k_genes(..., criteria="var")``), on the spot tables of stores.

scanpy's ``highly_variable_genes`` (flavour ``seurat``) is computed here with numpy and pandas, step by step as
scanpy 1.12 computes it (``_highly_variable_genes_single_batch``): importing scanpy and compiling its numba kernels
took ~5 s of a fresh process's first patches (issue 21), for arithmetic on a few small tables. The tests compare
the genes with scanpy's on the example cohort and on random count tables (ties included).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hest_spatialdata._expression import hest_gene_names

if TYPE_CHECKING:
    import anndata as ad

#: Substrings of the probe names HEST drops from the common genes (Xenium's negative controls).
CONTROL_PROBE_MARKS = ("BLANK", "Control")
#: A gene is kept in a sample when it is expressed (count > 0) in at least this fraction of its spots.
MIN_CELLS_PCT = 0.10
#: scanpy's ``highly_variable_genes(n_bins=20)``: mean-expression bins the dispersions are normalised in.
MEAN_BINS = 20


def benchmark_genes(tables: Iterable[ad.AnnData], n_genes: int = 50, min_cells_pct: float = MIN_CELLS_PCT) -> list[str]:
    """The genes HEST-Benchmark trains on: HEST's ``get_k_genes(adatas, k, criteria="var")``, step by step.

    1. each sample keeps the genes with a count > 0 in at least ``ceil(min_cells_pct * n_spots)`` spots
       (scanpy's ``filter_genes(min_cells=...)``);
    2. the genes kept in every sample (``numpy.intersect1d``: sorted by name from the second sample on), less
       those whose name contains ``BLANK`` or ``Control``;
    3. the raw counts of those genes, every spot of every sample stacked, as float32, ``log1p``, then scanpy's
       ``highly_variable_genes(n_top_genes=n_genes)`` (flavour ``seurat``; computed here, see
       :func:`seurat_highly_variable`);
    4. the highly variable genes in the order of step 2 (not ranked), the first ``n_genes``.

    Genes are HEST's names (``var["gene_name"]``); a name twice in one sample counts once (its first column).
    The counts are stacked as a sparse matrix where HEST stacks a dense frame: the same statistics in float64.

    Parameters
    ----------
    tables
        The samples' spot tables (raw counts in ``X``), in the task's order.
    n_genes
        How many genes (HEST-Benchmark: 50).
    min_cells_pct
        Fraction of a sample's spots a gene must be expressed in.

    Returns
    -------
    HEST gene names.

    Raises
    ------
    ValueError
        If the samples have no gene in common.
    """
    tables = list(tables)
    common: np.ndarray | None = None
    for table in tables:
        expressed = _expressed_spots(table.X)
        names = hest_gene_names(table).to_numpy()[expressed >= np.ceil(min_cells_pct * table.n_obs)]
        common = names if common is None else np.intersect1d(common, names)
    genes = [g for g in (common if common is not None else []) if not any(m in g for m in CONTROL_PROBE_MARKS)]
    if not genes:
        raise ValueError("the samples have no gene in common (expressed in enough spots of each)")
    stacked = sp.vstack([_columns(table, genes) for table in tables], format="csr")
    stacked.data = np.log1p(stacked.data)  # scanpy's log1p of a sparse matrix: of its stored values, in place
    chosen = seurat_highly_variable(stacked, n_genes)
    return [g for g, keep in zip(genes, chosen, strict=True) if keep][:n_genes]


def seurat_highly_variable(x: sp.spmatrix | np.ndarray, n_top_genes: int) -> np.ndarray:
    """The mask of scanpy's ``highly_variable_genes(adata, n_top_genes=n_top_genes)`` on ``log1p`` data ``x``.

    Flavour ``seurat``, one batch, as scanpy 1.12 computes it: ``expm1`` of the data in its dtype; each gene's
    mean and variance (ddof 1) in float64 from the values and their squares (``mean(x²) - mean(x)²``, the squares
    in the data's dtype, as fast-array-utils); a zero mean set to 1e-12; dispersion = variance / mean, 0 as NaN,
    its log; the log1p of the mean cut into :data:`MEAN_BINS` equal-width bins (``pandas.cut``); per bin the mean
    and standard deviation of the dispersions (a bin whose deviation is NaN gets mean 0 and deviation its mean);
    normalised dispersion = (dispersion - bin mean) / bin deviation; the genes whose normalised dispersion is at
    least the ``n_top_genes``-th highest (NaN never). Summation order can differ from scanpy's in the last bit.

    Parameters
    ----------
    x
        Spots x genes, ``log1p`` of counts (float32 as HEST stacks them).
    n_top_genes
        How many genes (more where several share the cut-off's dispersion).

    Returns
    -------
    A boolean mask over the genes.
    """
    values = sp.csc_matrix(x) if sp.issparse(x) else np.asarray(x)
    with warnings.catch_warnings():  # log of a NaN or negative dispersion: NaN, as scanpy's
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, var = _mean_var(values)
        mean[mean == 0] = 1e-12
        dispersion = var / mean
        dispersion[dispersion == 0] = np.nan
        dispersion = np.log(dispersion)
    frame = pd.DataFrame({"means": np.log1p(mean), "dispersions": dispersion})
    frame["mean_bin"] = pd.cut(frame["means"], bins=MEAN_BINS)
    stats = frame.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()  # scanpy's _postprocess_dispersions_seurat
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    per_gene = stats.loc[frame["mean_bin"]].set_index(frame.index)
    norm = ((frame["dispersions"] - per_gene["avg"]) / per_gene["dev"]).to_numpy()
    defined = norm[~np.isnan(norm)]  # +-inf where a bin's deviation is 0: kept, as scanpy
    n = min(n_top_genes, len(defined))
    if n == 0:
        return np.zeros(len(norm), dtype=bool)
    cut = np.sort(defined)[::-1][n - 1]
    return np.nan_to_num(norm, nan=-np.inf) >= cut


def _mean_var(x: sp.csc_matrix | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the mean and the variance (ddof 1) of ``expm1(x)``, as scanpy's ``stats.mean_var``."""
    n = x.shape[0]
    if sp.issparse(x):
        data = np.expm1(x.data)  # in the data's dtype, as scipy's expm1 of a sparse matrix
        columns = np.repeat(np.arange(x.shape[1]), np.diff(x.indptr))
        sums = np.bincount(columns, weights=data.astype(np.float64), minlength=x.shape[1])
        squares = np.bincount(columns, weights=(data * data).astype(np.float64), minlength=x.shape[1])
    else:
        data = np.expm1(x)
        sums = data.sum(axis=0, dtype=np.float64)
        squares = (data * data).sum(axis=0, dtype=np.float64)
    mean = sums / n
    var = squares / n - mean**2
    if n != 1:
        var *= n / (n - 1)
    return mean, var


def _expressed_spots(x: object) -> np.ndarray:
    """Spots with a count > 0, per gene (scanpy ``filter_genes``' ``number_per_gene``)."""
    if sp.issparse(x):
        return np.asarray((x > 0).sum(axis=0)).ravel()
    return np.count_nonzero(np.asarray(x) > 0, axis=0)


def _columns(table: ad.AnnData, genes: list[str]) -> sp.csr_matrix:
    names = hest_gene_names(table)
    first = ~names.duplicated()
    columns = np.flatnonzero(first)[names[first].get_indexer(genes)]
    x = table.X[:, columns]
    return sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else sp.csr_matrix(np.asarray(x, dtype=np.float32))
