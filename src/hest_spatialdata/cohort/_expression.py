"""The spot tables of a cohort as one AnnData (:meth:`Cohort.expression`), read without spatialdata."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hest_spatialdata._constants import SPOT_INSTANCE_KEY
from hest_spatialdata._store_parts import read_spot_table

if TYPE_CHECKING:
    import anndata as ad

    from hest_spatialdata.cohort._cohort import Cohort


def hest_gene_names(adata: ad.AnnData) -> pd.Index:
    """HEST's own gene names of a store table (``var["gene_name"]``; the var names where it is absent)."""
    if "gene_name" in adata.var.columns:
        return pd.Index(adata.var["gene_name"].astype(str).to_numpy(), dtype=object)
    return pd.Index(adata.var_names.astype(str), dtype=object)


def sample_table(adata: ad.AnnData, sample_id: str, sample_values: dict[str, Any]) -> ad.AnnData:
    """A store table made ready for concatenation: var names = HEST names, obs = the sample's columns.

    ``X`` and ``obsm["spatial"]`` are kept as they are; everything else store-specific (uns, var statistics,
    obs QC columns) is dropped, since it does not concatenate meaningfully.
    """
    import anndata as ad

    barcodes = np.asarray(adata.obs.get(SPOT_INSTANCE_KEY, adata.obs_names)).astype(str)
    obs = pd.DataFrame(
        {"sample_id": sample_id, "barcode": barcodes, **sample_values},
        index=pd.Index([f"{sample_id}_{b}" for b in barcodes], dtype=object),
    )
    var = pd.DataFrame(index=hest_gene_names(adata))
    obsm = {"spatial": np.asarray(adata.obsm["spatial"], dtype=np.float64)} if "spatial" in adata.obsm else None
    out = ad.AnnData(X=adata.X, obs=obs, var=var, obsm=obsm)
    out.var["gene_name"] = out.var_names.to_numpy()
    out.var_names_make_unique()  # a HEST name twice in one sample: the 2nd becomes NAME-1, gene_name keeps NAME
    return out


def concat_tables(
    cohort: Cohort, *, join: str, images: bool, sample_columns: Sequence[str]
) -> ad.AnnData:  # fmt: skip
    """See :meth:`Cohort.expression`."""
    import anndata as ad

    if join not in ("inner", "outer"):
        raise ValueError(f"join must be 'inner' or 'outer', got {join!r}")
    tables = []
    names: dict[str, str] = {}
    for sample_id in cohort:
        row = cohort.table.loc[sample_id]
        values = {c: None if pd.isna(row[c]) else str(row[c]) for c in sample_columns}
        table = sample_table(read_spot_table(cohort.path(sample_id)), sample_id, values)
        names.update(zip(table.var_names, table.var["gene_name"], strict=True))
        tables.append(table)
    adata = ad.concat(tables, join=join, merge=None, fill_value=0)
    adata.var["gene_name"] = [names[v] for v in adata.var_names]
    adata.obs["sample_id"] = pd.Categorical(adata.obs["sample_id"], categories=cohort.sample_ids)
    for column in sample_columns:
        adata.obs[column] = adata.obs[column].astype("category")
    if images:
        from hest_spatialdata.legacy import to_legacy_anndata

        adata.uns["spatial"] = {}
        for sample_id in cohort:
            legacy = to_legacy_anndata(cohort[sample_id], library_id=sample_id)
            adata.uns["spatial"][sample_id] = legacy.uns["spatial"][sample_id]
    return adata
