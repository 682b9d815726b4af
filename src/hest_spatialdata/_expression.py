"""Genes of a HEST expression table: HEST's names, which to show, by var name or original name, per spot."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hest_spatialdata._constants import SPOT_INSTANCE_KEY

if TYPE_CHECKING:
    import anndata as ad


def hest_gene_names(adata: ad.AnnData) -> pd.Index:
    """HEST's own gene names of a store table (``var["gene_name"]``; the var names where it is absent)."""
    if "gene_name" in adata.var.columns:
        return pd.Index(adata.var["gene_name"].astype(str).to_numpy(), dtype=object)
    return pd.Index(adata.var_names.astype(str), dtype=object)


def most_expressed_gene(table: ad.AnnData) -> str:
    """The var name with the largest total count over all observations."""
    return genes_by_expression(table)[0]


def genes_by_expression(table: ad.AnnData) -> list[str]:
    """Var names sorted by decreasing total count (ties by name)."""
    totals = np.asarray(table.X.sum(axis=0)).ravel()
    names = np.asarray(table.var_names, dtype=str)
    return [str(name) for name in names[np.lexsort((names, -totals))]]


def resolve_gene(table: ad.AnnData, gene: str) -> str:
    """The var name of ``gene``, given as a var name or as an original name in ``var["gene_name"]``.

    Raises
    ------
    KeyError
        If neither matches.
    """
    if gene in table.var_names:
        return gene
    if "gene_name" in table.var.columns:
        hits = table.var_names[table.var["gene_name"].astype(str) == gene]
        if len(hits):
            return str(hits[0])
    raise KeyError(f"gene {gene!r} not in the table ({table.n_vars} genes, e.g. {', '.join(table.var_names[:5])})")


def gene_values(table: ad.AnnData, gene: str, spot_ids: Sequence[Any]) -> np.ndarray:
    """Counts of ``gene`` for ``spot_ids`` (spots absent from the table get 0), as float."""
    column = table[:, resolve_gene(table, gene)].X
    values = np.asarray(column.todense() if hasattr(column, "todense") else column, float).ravel()
    ids = table.obs.get(SPOT_INSTANCE_KEY, table.obs_names)
    by_spot = pd.Series(values, index=pd.Index(np.asarray(ids).astype(str)))
    return by_spot.reindex(pd.Index(np.asarray(spot_ids).astype(str))).fillna(0.0).to_numpy()
