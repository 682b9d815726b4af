"""A set of converted stores used as one: :func:`open_cohort` and :class:`Cohort`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hest_spatialdata.cohort._table import cohort_table, store_paths
from hest_spatialdata.storage.locations import locate

if TYPE_CHECKING:
    import anndata as ad
    from spatialdata import SpatialData
    from upath import UPath

    from hest_spatialdata.cohort._patches import CohortPatchDataset

#: obs columns that :meth:`Cohort.expression` copies from :attr:`Cohort.table`.
SAMPLE_OBS_COLUMNS = ("patient", "organ", "technology")


def deal_groups(groups: Mapping[str, str], order: Sequence[str], n_folds: int) -> list[tuple[list[str], list[str]]]:
    """Folds of whole groups: each group of ``order`` in turn goes to the fold with the fewest samples so far.

    Parameters
    ----------
    groups
        Sample id -> group, in the order the samples are listed in each fold.
    order
        Every group once, in dealing order (ties between folds go to the first).
    n_folds
        Number of folds.

    Returns
    -------
    ``(train sample ids, test sample ids)`` per fold.
    """
    sizes = Counter(groups.values())
    fold_of: dict[str, int] = {}
    load = [0] * n_folds
    for group in order:
        fold = int(np.argmin(load))
        fold_of[group] = fold
        load[fold] += sizes[group]
    return [
        ([s for s, g in groups.items() if fold_of[g] != fold], [s for s, g in groups.items() if fold_of[g] == fold])
        for fold in range(n_folds)
    ]


def open_cohort(
    source: str | Path | UPath | Iterable[str | Path | UPath],
    *,
    storage_options: Mapping[str, Any] | None = None,
    **filters: str | Iterable[str] | None,
) -> Cohort:
    """Open converted stores as one cohort; only their ``zarr.json`` and Parquet footers are read.

    Parameters
    ----------
    source
        A folder of ``{id}.zarr`` stores, a glob (``"stores/TENX*.zarr"``), one store, or a list of store paths;
        any of them may be a URL (``s3://bucket/prefix``, any fsspec URL).
    storage_options
        fsspec options of URL sources (endpoint, credentials ...); credentials otherwise come from the usual places.
    **filters
        The filters of ``hest-to-sdata list`` (``ids``, ``organ``, ``species``, ``technology``, ``oncotree``,
        ``disease_state``), applied to each store's ``attrs["hest"]`` with the same matching and aliases.

    Returns
    -------
    The cohort of the matching stores, in sample-id order.

    Raises
    ------
    HestInputError
        For a path that is not a store of this package, or two stores of one sample.
    TypeError
        For an unknown filter.
    """
    table = cohort_table(store_paths(source, storage_options), filters)
    return Cohort(table.sort_index(), storage_options=storage_options)


class Cohort:
    """Converted HEST stores used as one: a table of samples, their data lazily, and cross-sample views.

    Parameters
    ----------
    table
        One row per sample, indexed by sample id, with a ``path`` column (see :func:`open_cohort`).
    storage_options
        fsspec options of the stores given as URLs.

    Attributes
    ----------
    table
        Sample id -> organ, technology, species, oncotree code, disease state, patient, pixel size, spot / gene /
        nucleus / Xenium cell counts and the store path.
    """

    def __init__(self, table: pd.DataFrame, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.table = table
        self.storage_options = dict(storage_options or {})
        self._sdata: dict[str, SpatialData] = {}

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self) -> Iterator[str]:
        """The sample ids."""
        return iter(self.table.index.tolist())

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self.table.index

    def __getitem__(self, sample_id: str) -> SpatialData:
        """The sample's SpatialData (:func:`hest_spatialdata.read_store`: lazy, read once and kept)."""
        if sample_id not in self.table.index:
            raise KeyError(f"{sample_id!r} is not in the cohort ({', '.join(self.sample_ids[:5])}, ...)")
        if sample_id not in self._sdata:
            from hest_spatialdata.storage.reader import read_store

            self._sdata[sample_id] = read_store(self.path(sample_id))
        return self._sdata[sample_id]

    def __repr__(self) -> str:
        kinds = ", ".join(f"{n} {t}" for t, n in self.table["technology"].value_counts().items())
        return f"Cohort({len(self)} samples: {kinds or 'none'})"

    @property
    def sample_ids(self) -> list[str]:
        """The sample ids, in order."""
        return self.table.index.tolist()

    def path(self, sample_id: str) -> Path | UPath:
        """The store of ``sample_id`` (a ``UPath`` with the storage options for a URL)."""
        return locate(self.table.at[sample_id, "path"], self.storage_options)

    def subset(self, sample_ids: Sequence[str]) -> Cohort:
        """The cohort of ``sample_ids`` (e.g. one side of :meth:`splits`), in that order."""
        return Cohort(self.table.loc[list(sample_ids)], storage_options=self.storage_options)

    def to_spatialdata(self) -> SpatialData:
        """Every element of every store in one SpatialData, with spatialdata's own ``concatenate``.

        Element ``name`` of sample ``S`` becomes ``name-S`` and each sample keeps its coordinate systems apart as
        ``global-S`` and ``microns-S`` (spatialdata's renaming of ``concatenate({S: sdata, ...})``). Tables of the
        same name are concatenated: ``table`` holds every spot of every sample, with ``obs["sample_id"]``, its
        ``region`` column naming each sample's ``spots-S`` and obs names ``barcode-S``. The stores are read
        afresh (lazily), so the samples of ``cohort[S]`` are not modified.
        """
        import spatialdata as sd

        from hest_spatialdata.storage.reader import read_store

        sdatas = {}
        for sample_id in self:
            sdata = read_store(self.path(sample_id))
            for table in sdata.tables.values():
                table.obs["sample_id"] = pd.Categorical([sample_id] * table.n_obs, categories=self.sample_ids)
            sdatas[sample_id] = sdata
        return sd.concatenate(sdatas, concatenate_tables=True, modify_tables_inplace=True)

    def expression(self, join: Literal["inner", "outer"] = "inner", *, images: bool = False) -> ad.AnnData:
        """All spots of all samples in one AnnData, genes matched by HEST's own names.

        Parameters
        ----------
        join
            ``"inner"``: the genes every sample has; ``"outer"``: every gene of any sample (absent ones count 0).
        images
            Also carry each sample's ``uns["spatial"][sample_id]`` library (hires / lowres images from the pyramid
            and scale factors, see :func:`hest_spatialdata.to_legacy_anndata`), so that
            ``sc.pl.spatial(adata[adata.obs.sample_id == S], library_id=S)`` draws sample ``S``.

        Returns
        -------
        Spots x genes with ``X`` the stores' counts unchanged; obs ``sample_id``, ``barcode`` and the sample's
        ``patient``, ``organ``, ``technology``; obs names ``{sample_id}_{barcode}``; var names are HEST's gene
        names (``var["gene_name"]``; each store's var names were made valid for spatialdata per store);
        ``obsm["spatial"]`` the spot centres in each slide's level-0 pixels.
        """
        return concat_tables(self, join=join, images=images, sample_columns=SAMPLE_OBS_COLUMNS)

    def splits(self, n_folds: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
        """Patient-grouped folds: ``(train sample ids, test sample ids)`` per fold, HEST-Benchmark style.

        The samples of one patient are always on the same side; a sample without a patient is its own group.
        Groups are shuffled with ``seed`` and then dealt, largest first, to the fold with the fewest samples, so
        the folds are as even as the groups allow and the same for the same seed. Every sample is in exactly one
        test fold.

        Parameters
        ----------
        n_folds
            Number of folds, from 2 to the number of groups.
        seed
            Seed of the shuffle.

        Raises
        ------
        ValueError
            If ``n_folds`` is below 2 or above the number of groups.
        """
        groups = self.groups()
        unique = sorted(set(groups.values()))
        if not 2 <= n_folds <= len(unique):
            raise ValueError(f"n_folds must be between 2 and the {len(unique)} patient groups, got {n_folds}")
        order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
        sizes = Counter(groups.values())
        order.sort(key=lambda group: -sizes[group])  # stable: ties keep the shuffled order
        return deal_groups(groups, order, n_folds)

    def groups(self) -> dict[str, str]:
        """Sample id -> its patient group (the patient, or the sample itself when it has no patient)."""
        patients = self.table["patient"]
        return {s: f"patient:{patients[s]}" if pd.notna(patients[s]) else f"sample:{s}" for s in self}

    def patch_dataset(
        self, genes: Sequence[str] | None = None, patch_size_px: int = 224, um_per_px: float = 0.5, **options: Any
    ) -> CohortPatchDataset:
        """Patch–expression pairs across the samples on one gene list; see :class:`CohortPatchDataset`.

        ``genes=None`` picks ``n_genes`` genes the way HEST-Benchmark does (:func:`benchmark_genes`); ``options``
        are those of :class:`CohortPatchDataset` (``n_genes``, ``log1p``, ``cache_bytes``, ``level_tolerance``,
        ``resample``, ``threads``, ``storage_options``).
        """
        from hest_spatialdata.cohort._patches import CohortPatchDataset

        stores = {s: self.path(s) for s in self}
        if self.storage_options:  # the stores' URLs alone would lose the endpoint and credentials
            options.setdefault("storage_options", self.storage_options)
        return CohortPatchDataset(stores, genes=genes, patch_size_px=patch_size_px, um_per_px=um_per_px, **options)


def concat_tables(
    cohort: Cohort, *, join: str, images: bool, sample_columns: Sequence[str]
) -> ad.AnnData:  # fmt: skip
    """See :meth:`Cohort.expression`."""
    import anndata as ad

    from hest_spatialdata.cohort._expression import sample_table
    from hest_spatialdata.storage._parts import read_spot_table

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
        from hest_spatialdata.views.legacy import to_legacy_anndata

        adata.uns["spatial"] = {}
        for sample_id in cohort:
            legacy = to_legacy_anndata(cohort[sample_id], library_id=sample_id)
            adata.uns["spatial"][sample_id] = legacy.uns["spatial"][sample_id]
    return adata
