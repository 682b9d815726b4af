"""Patch–expression pairs across the samples of a cohort, for PyTorch-style training without torch.

:class:`CohortPatchDataset` indexes every spot of every sample on one gene list and cuts each patch with the
single-store :class:`~hest_spatialdata.loaders.dataset.PatchDataset` of its sample. The spot tables are read once, when
the dataset is made, with the cohort's own reader (``_store_parts.read_spot_table``, no spatialdata), and kept
on the chosen genes only; each store's image and spots are opened on first use in each process: pickling drops
the opened stores, so DataLoader workers (``spawn`` or ``fork``) each open their own (JSON and Parquet only).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hest_spatialdata._constants import SPOT_INSTANCE_KEY
from hest_spatialdata._expression import hest_gene_names
from hest_spatialdata.benchmark._genes import benchmark_genes
from hest_spatialdata.loaders.dataset import LEVEL_TOLERANCE, ChunkCache, PatchDataset, gene_columns
from hest_spatialdata.storage._parts import read_spot_table

if TYPE_CHECKING:
    import anndata as ad

#: Memory per process for finished patches (or decoded chunks) of all the stores of a cohort (one
#: :class:`ChunkCache`): bounded, whatever the number and size of the slides. While it holds every patch of the
#: dataset (150 KB per 224-px patch: ~6,900 patches), patches are cut a band of chunks at a time and kept, so a
#: shuffled first epoch decodes each chunk about once and later epochs only copy patches; past that each patch
#: decodes the chunks it covers (kept in the same cache).
COHORT_CACHE_BYTES = 1024**3


class CohortPatchDataset:
    """Patches centred on every spot of every sample, with the spot's expression on one gene list.

    Items are ``(image, expression, sample_id, barcode)``: ``image`` uint8 (``patch_size_px``, ``patch_size_px``,
    3), ``expression`` float32 (``len(genes)``, in :attr:`genes` order, ``log1p`` if asked), ``sample_id`` and
    ``barcode`` str. The index is built from the spot tables (read with anndata); each store's image is opened on
    the first item of that sample, in the process that asks for it. The dataset pickles without its opened
    stores, so it can be handed to ``torch.utils.data.DataLoader(..., num_workers=n)`` as is.

    Parameters
    ----------
    stores
        Sample id -> store path.
    genes
        HEST gene names (or a store's var names) to return; ``None``: :func:`benchmark_genes` with ``n_genes``.
    patch_size_px
        Side of the patches in pixels.
    um_per_px
        Resolution of the patches (HEST-Benchmark: 224 px at 0.5 µm/px).
    n_genes
        Genes chosen when ``genes`` is ``None`` (HEST-Benchmark uses 50).
    log1p
        ``log1p`` of the counts (HEST-Benchmark's normalisation).
    cache_bytes
        Memory for finished patches or decoded chunks in each process, shared by all the stores (one
        :class:`~hest_spatialdata.loaders.dataset.ChunkCache`); default :data:`COHORT_CACHE_BYTES`.
    resample, level_tolerance, threads, storage_options
        As for :class:`~hest_spatialdata.loaders.dataset.PatchDataset` (the default ``resample="hest"`` makes HEST's own
        patches, ``"antialias"`` smoother ones; the default ``level_tolerance`` resamples every patch from a level
        at least as fine as asked, as HEST does).

    Attributes
    ----------
    genes
        The gene list.
    sample_ids, barcodes
        Sample and spot of every item.
    """

    def __init__(
        self,
        stores: Mapping[str, str | Path],
        genes: Sequence[str] | None = None,
        patch_size_px: int = 224,
        um_per_px: float = 0.5,
        *,
        n_genes: int = 50,
        log1p: bool = True,
        cache_bytes: int | None = None,
        resample: str = "hest",
        level_tolerance: float = LEVEL_TOLERANCE,
        threads: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if not stores:
            raise ValueError("no store to take patches from")
        self.stores = {str(s): str(p) for s, p in stores.items()}
        self.storage_options = storage_options
        tables = {s: read_spot_table(p, storage_options=storage_options) for s, p in self.stores.items()}
        self.genes = list(genes) if genes is not None else benchmark_genes(tables.values(), n_genes)
        self._tables = {s: _on_genes(t, self.genes, s) for s, t in tables.items()}
        per_sample = {s: np.asarray(t.obs.get(SPOT_INSTANCE_KEY, t.obs_names)).astype(str) for s, t in tables.items()}
        self.sample_ids = np.concatenate([np.full(len(b), s, dtype=object) for s, b in per_sample.items()])
        self.barcodes = np.concatenate([b.astype(object) for b in per_sample.values()])
        self._barcodes = per_sample
        starts = np.cumsum([0, *(len(b) for b in per_sample.values())])
        self._starts = dict(zip(per_sample, starts[:-1].tolist(), strict=True))
        self.patch_size_px, self.um_per_px, self.log1p = int(patch_size_px), float(um_per_px), log1p
        self.cache_bytes = COHORT_CACHE_BYTES if cache_bytes is None else int(cache_bytes)
        self.resample, self.level_tolerance, self.threads = resample, float(level_tolerance), threads
        self._read_ahead = self.cache_bytes >= len(self) * self.patch_size_px**2 * 3  # every patch fits the cache
        self._open: dict[str, PatchDataset] = {}
        self._cache: ChunkCache | None = None

    def __len__(self) -> int:
        return len(self.barcodes)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str, str]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray, str, str]]:
        """Items of ``indices`` at once (what ``torch.utils.data.DataLoader`` asks of a batch when this exists).

        Each sample's patches of the batch are decoded and resampled together, in the datasets' threads.
        """
        positions = []
        for index in indices:
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} out of range for {len(self)} patches")
            positions.append(int(index) % len(self))
        by_sample: dict[str, list[int]] = {}
        for position in positions:
            by_sample.setdefault(str(self.sample_ids[position]), []).append(position)
        items: dict[int, tuple[np.ndarray, np.ndarray, str, str]] = {}
        for sample_id, members in by_sample.items():
            start = self._starts[sample_id]
            for position, (image, expression, barcode) in zip(
                members, self.dataset(sample_id).__getitems__([p - start for p in members]), strict=True
            ):
                items[position] = (image, expression, sample_id, barcode)
        return [items[p] for p in positions]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, str, str]]:
        for index in range(len(self)):
            yield self[index]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"], state["_cache"] = {}, None  # each process opens the stores it reads, with its own cache
        return state

    def __repr__(self) -> str:
        return (
            f"CohortPatchDataset({len(self)} spots of {len(self.stores)} samples x {len(self.genes)} genes, "
            f"{self.patch_size_px} px at {self.um_per_px} µm/px)"
        )

    def dataset(self, sample_id: str) -> PatchDataset:
        """The single-store dataset of ``sample_id``, opened on first use in this process."""
        if sample_id not in self._open:
            if self._cache is None:
                self._cache = ChunkCache(self.cache_bytes)
            self._open[sample_id] = PatchDataset(
                self.stores[sample_id], patch_size_px=self.patch_size_px, um_per_px=self.um_per_px,
                genes=self.genes, barcodes=self._barcodes[sample_id], log1p=self.log1p, chunk_cache=self._cache,
                resample=self.resample, level_tolerance=self.level_tolerance, read_ahead=self._read_ahead,
                threads=self.threads,
                storage_options=self.storage_options, spot_table=self._tables[sample_id],
            )  # fmt: skip
        return self._open[sample_id]

    def items_of(self, sample_ids: Iterable[str]) -> np.ndarray:
        """Indices of the items of ``sample_ids`` (e.g. the train side of :meth:`Cohort.splits`)."""
        return np.flatnonzero(pd.Index(self.sample_ids).isin(list(sample_ids)))


def _on_genes(table: ad.AnnData, genes: Sequence[str], sample_id: str) -> ad.AnnData:
    """``table`` on ``genes`` only, in that order and under those names: what the sample's dataset keeps of it."""
    import anndata as ad

    known = set(hest_gene_names(table)) | set(table.var_names.astype(str))
    missing = [g for g in genes if g not in known]
    if missing:
        raise KeyError(f"sample {sample_id} has no gene {', '.join(missing[:5])} ({len(missing)} missing)")
    columns, _ = gene_columns(table, genes)
    return ad.AnnData(X=table.X[:, columns], obs=table.obs, var=pd.DataFrame(index=pd.Index(genes, dtype=object)),
                      uns=table.uns)  # fmt: skip
