"""The spot tables of a cohort as one AnnData (:meth:`Cohort.expression`), read without spatialdata."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hest_spatialdata._constants import SPOT_INSTANCE_KEY
from hest_spatialdata._expression import hest_gene_names

if TYPE_CHECKING:
    import anndata as ad


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
