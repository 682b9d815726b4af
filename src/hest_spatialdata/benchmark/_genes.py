"""HEST-Benchmark's gene choice (HEST's ``get_k_genes(..., criteria="var")``), on the spot tables of stores."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from hest_spatialdata._expression import hest_gene_names

if TYPE_CHECKING:
    import anndata as ad

#: Substrings of the probe names HEST drops from the common genes (Xenium's negative controls).
CONTROL_PROBE_MARKS = ("BLANK", "Control")
#: A gene is kept in a sample when it is expressed (count > 0) in at least this fraction of its spots.
MIN_CELLS_PCT = 0.10


def benchmark_genes(tables: Iterable[ad.AnnData], n_genes: int = 50, min_cells_pct: float = MIN_CELLS_PCT) -> list[str]:
    """The genes HEST-Benchmark trains on: HEST's ``get_k_genes(adatas, k, criteria="var")``, step by step.

    1. each sample keeps the genes with a count > 0 in at least ``ceil(min_cells_pct * n_spots)`` spots
       (scanpy's ``filter_genes(min_cells=...)``);
    2. the genes kept in every sample (``numpy.intersect1d``: sorted by name from the second sample on), less
       those whose name contains ``BLANK`` or ``Control``;
    3. the raw counts of those genes, every spot of every sample stacked, as float32, ``log1p``, then scanpy's
       ``highly_variable_genes(n_top_genes=n_genes)`` (flavour ``seurat``);
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
    import anndata as ad
    import scanpy as sc

    tables = list(tables)
    common: np.ndarray | None = None
    for table in tables:
        expressed = _expressed_spots(table.X)
        names = hest_gene_names(table).to_numpy()[expressed >= np.ceil(min_cells_pct * table.n_obs)]
        common = names if common is None else np.intersect1d(common, names)
    genes = [g for g in (common if common is not None else []) if not any(m in g for m in CONTROL_PROBE_MARKS)]
    if not genes:
        raise ValueError("the samples have no gene in common (expressed in enough spots of each)")
    stacked = ad.AnnData(sp.vstack([_columns(table, genes) for table in tables], format="csr"))
    stacked.var_names = genes
    sc.pp.log1p(stacked)
    sc.pp.highly_variable_genes(stacked, n_top_genes=n_genes)
    return stacked.var_names[stacked.var["highly_variable"].to_numpy()][:n_genes].tolist()


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
