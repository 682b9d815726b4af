"""HEST-Benchmark's protocol on embeddings written by :func:`~hest_spatialdata.benchmark.embed`: :func:`benchmark`.

As HEST's ``benchmark.py`` and ``trainer.py`` run it (``docs/benchmark.md``): per fold, ``StandardScaler`` then
``PCA(256, random_state=seed)`` fitted on the training embeddings, the reduced features as float32, then
``Ridge(solver="lsqr", alpha=100 / (n_features * n_genes), fit_intercept=False, max_iter=1000,
random_state=seed)`` on ``log1p`` counts; Pearson r per gene on the test fold (``scipy.stats.pearsonr``); the
fold's score is the mean over genes, the result the mean and standard deviation (numpy's, ddof 0) over folds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hest_spatialdata._constants import SPOT_INSTANCE_KEY
from hest_spatialdata.benchmark._embed import check_spots, embeddings_table, select_spots

if TYPE_CHECKING:
    import anndata as ad

    from hest_spatialdata.cohort import Cohort

#: PCA components (HEST's ``latent_dim``), fewer where the training set or the embeddings are smaller.
LATENT_DIM = 256
#: HEST's ridge: ``alpha = RIDGE_ALPHA / (n_features * n_genes)``, lsqr, at most ``RIDGE_MAX_ITER`` iterations.
RIDGE_ALPHA = 100.0
RIDGE_MAX_ITER = 1000


@dataclass
class BenchmarkResult:
    """What :func:`benchmark` found.

    Attributes
    ----------
    embeddings
        Name of the embeddings benchmarked.
    genes
        The genes predicted, in order.
    folds
        ``(train sample ids, test sample ids)`` per fold.
    per_gene
        Pearson r, genes x folds (columns ``fold0``, ``fold1``, ...).
    seed
        Seed of PCA and ridge.
    n_spots
        ``(n_train, n_test)`` spots per fold.
    spots
        Sample id -> the spots used: ``"patches"`` (those of HEST's patch file) or ``"all"``.
    """

    embeddings: str
    genes: list[str]
    folds: list[tuple[list[str], list[str]]]
    per_gene: pd.DataFrame
    seed: int
    n_spots: list[tuple[int, int]] = field(default_factory=list)
    spots: dict[str, str] = field(default_factory=dict)

    @property
    def pearson_per_fold(self) -> np.ndarray:
        """Each fold's mean Pearson r over genes (NaN where a gene's r is, as in HEST)."""
        return self.per_gene.mean(axis=0, skipna=False).to_numpy()

    @property
    def pearson_mean(self) -> float:
        """Mean over folds of the fold means."""
        return float(np.mean(self.pearson_per_fold))

    @property
    def pearson_std(self) -> float:
        """Standard deviation (ddof 0, as HEST) over folds of the fold means."""
        return float(np.std(self.pearson_per_fold))

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able values (HEST's ``results_kfold.json`` keys and ours)."""
        return {
            "embeddings": self.embeddings,
            "pearson_mean": self.pearson_mean,
            "pearson_std": self.pearson_std,
            "mean_per_split": self.pearson_per_fold.tolist(),
            "genes": self.genes,
            "folds": [{"train": list(train), "test": list(test)} for train, test in self.folds],
            "n_spots": [{"train": a, "test": b} for a, b in self.n_spots],
            "spots": self.spots,
            "seed": self.seed,
            "pearson_corrs": [
                {"name": g, "pearson_corrs": row.tolist(), "mean": float(np.mean(row)), "std": float(np.std(row))}
                for g, row in zip(self.genes, self.per_gene.to_numpy(), strict=True)
            ],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The result as JSON, also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_csv(self, path: str | Path | None = None) -> str:
        """The per-gene table (gene x fold, plus mean and std over folds) as CSV, also written to ``path``."""
        table = self.per_gene.assign(mean=self.per_gene.mean(axis=1), std=self.per_gene.std(axis=1, ddof=0))
        text = table.to_csv(index_label="gene")
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def plot(self, path: str | Path | None = None) -> Any:
        """Per-gene Pearson r (mean over folds, bars the range of folds), best first; a matplotlib figure.

        Needs matplotlib (``hest-spatialdata[plot]``); saved as PNG to ``path`` if given.
        """
        import matplotlib.pyplot as plt

        order = self.per_gene.mean(axis=1).sort_values(ascending=False).index
        table = self.per_gene.loc[order]
        mean = table.mean(axis=1).to_numpy()
        # clipped: the mean of equal folds can differ from them in the last bit, and matplotlib refuses a negative bar
        low = np.clip(mean - table.min(axis=1).to_numpy(), 0, None)
        high = np.clip(table.max(axis=1).to_numpy() - mean, 0, None)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(order) + 1.5), 3.8), layout="constrained")
        ax.bar(np.arange(len(order)), mean, yerr=np.vstack([low, high]), color="#4c72b0", ecolor="#555", capsize=1.5)
        ax.axhline(self.pearson_mean, color="#c44e52", lw=1, label=f"mean over folds {self.pearson_mean:.3f}")
        ax.set_xticks(np.arange(len(order)), order, rotation=90, fontsize=7)
        ax.set_ylabel("Pearson r (test folds)")
        ax.set_title(f"{self.embeddings}: {len(self.genes)} genes, {len(self.folds)} folds")
        ax.legend(loc="upper right", fontsize=8)
        if path is not None:
            fig.savefig(path, dpi=150)
        return fig


def benchmark_folds(cohort: Cohort, n_folds: int | None = None) -> list[tuple[list[str], list[str]]]:
    """HEST-Benchmark's folds: samples grouped by (dataset title, patient), one group or pack of groups held out.

    ``n_folds=None``: one fold per group, largest group first. With ``n_folds``, groups are dealt largest first
    (ties by dataset title and patient) to the fold with the fewest samples so far. A sample without a patient is
    its own group.

    Raises
    ------
    ValueError
        If there are fewer than 2 groups, or ``n_folds`` is not between 2 and their number.
    """
    from hest_spatialdata.cohort._cohort import deal_groups

    groups = {s: _group(cohort, s) for s in cohort}
    sizes = Counter(groups.values())
    k = len(sizes) if n_folds is None else n_folds
    if not 2 <= k <= len(sizes):
        raise ValueError(f"the benchmark needs 2 to {len(sizes)} folds (groups of dataset and patient), got {k}")
    return deal_groups(groups, sorted(sizes, key=lambda g: (-sizes[g], g)), k)


def _group(cohort: Cohort, sample_id: str) -> str:
    from hest_spatialdata.storage.store import store_attrs

    meta = (store_attrs(cohort.path(sample_id)) or {}).get("metadata") or {}
    patient = cohort.table.at[sample_id, "patient"]
    if pd.isna(patient):
        return f"sample:{sample_id}"
    return f"{meta.get('dataset_title') or ''}/patient:{patient}"


def benchmark(
    cohort: Cohort | Any,
    embeddings: str,
    genes: Sequence[str] | None = None,
    n_folds: int | None = None,
    seed: int = 1,
    *,
    folds: Sequence[tuple[Sequence[str], Sequence[str]]] | None = None,
    spots: Literal["patches", "all"] = "patches",
) -> BenchmarkResult:
    """Run HEST-Benchmark's protocol on the embeddings ``embeddings`` of a cohort's stores.

    Parameters
    ----------
    cohort
        A :class:`~hest_spatialdata.Cohort` (or what :func:`~hest_spatialdata.open_cohort` takes).
    embeddings
        Name of the embeddings (the table ``{embeddings}_embeddings`` of each store, from ``embed``).
    genes
        HEST gene names to predict; ``None``: :func:`~hest_spatialdata.benchmark.benchmark_genes` (50).
    n_folds
        ``None``: one fold per (dataset, patient) group; else that many folds (see :func:`benchmark_folds`).
    seed
        ``random_state`` of PCA and ridge (HEST's default: 1).
    folds
        Explicit ``(train sample ids, test sample ids)`` per fold (e.g. HEST's shipped ``splits/train_i.csv`` /
        ``test_i.csv``) instead of :func:`benchmark_folds`.
    spots
        ``"patches"``: the embedded spots that are in the store's ``patches`` shapes (HEST's patch file), as
        HEST-Benchmark (a store without them: all its embedded spots, with a logged warning); ``"all"``: every
        embedded spot. The genes are chosen on all the spots of the tables either way, as HEST's ``get_k_genes``
        (run on each sample's whole st h5ad).

    Returns
    -------
    The genes, folds and per-gene Pearson r per fold.

    Raises
    ------
    KeyError
        If a store holds no such embeddings, or lacks a gene.
    ValueError
        For folds that cannot be made, or explicit folds naming samples outside the cohort.
    """
    from hest_spatialdata.benchmark._genes import benchmark_genes
    from hest_spatialdata.cohort import Cohort, open_cohort
    from hest_spatialdata.storage._parts import read_spot_table

    check_spots(spots)
    cohort = cohort if isinstance(cohort, Cohort) else open_cohort(cohort)
    tables = {s: read_spot_table(cohort.path(s)) for s in cohort}
    genes = list(genes) if genes is not None else benchmark_genes(tables.values())
    data = {s: _sample_data(cohort.path(s), tables[s], embeddings, genes, s, spots) for s in cohort}
    folds = benchmark_folds(cohort, n_folds) if folds is None else [(list(a), list(b)) for a, b in folds]
    unknown = sorted({s for train, test in folds for s in (*train, *test)} - set(data))
    if unknown:
        raise ValueError(f"the folds name samples not in the cohort: {', '.join(unknown)}")
    columns, n_spots = {}, []
    for k, (train, test) in enumerate(folds):
        x_train, y_train = (np.concatenate([data[s][i] for s in train]) for i in (0, 1))
        x_test, y_test = (np.concatenate([data[s][i] for s in test]) for i in (0, 1))
        columns[f"fold{k}"] = fold_pearson(x_train, y_train, x_test, y_test, seed)
        n_spots.append((len(x_train), len(x_test)))
    per_gene = pd.DataFrame(columns, index=pd.Index(genes, name="gene"))
    return BenchmarkResult(embeddings, genes, folds, per_gene, seed, n_spots, {s: data[s][2] for s in data})


def fold_pearson(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> np.ndarray:
    """Pearson r per gene of one fold: scaler, PCA and ridge fitted on train, scored on test (HEST's trainer)."""
    from scipy.stats import pearsonr
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    n_components = min(LATENT_DIM, x_train.shape[0], x_train.shape[1])
    reduce = Pipeline([("scaler", StandardScaler()), ("PCA", PCA(n_components=n_components, random_state=seed))])
    # HEST wraps the reduced features in torch.Tensor: float32
    train = reduce.fit_transform(x_train).astype(np.float32)
    test = reduce.transform(x_test).astype(np.float32)
    alpha = RIDGE_ALPHA / (train.shape[1] * y_train.shape[1])
    ridge = Ridge(alpha=alpha, solver="lsqr", fit_intercept=False, max_iter=RIDGE_MAX_ITER, random_state=seed)
    predictions = ridge.fit(train, y_train).predict(test)
    return np.array([pearsonr(y_test[:, g], predictions[:, g])[0] for g in range(y_test.shape[1])])


def _sample_data(
    path: Path, table: ad.AnnData, embeddings: str, genes: Sequence[str], sample_id: str, spots: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """One sample's embeddings, ``log1p`` counts of ``genes`` (float64, HEST's ``load_adata``) and spot rule applied.

    The rows are the embedded spots ``spots`` selects (:func:`select_spots`), the counts matched by barcode.
    """
    import anndata as ad
    import scipy.sparse as sp

    from hest_spatialdata._expression import hest_gene_names

    element = path / "tables" / embeddings_table(embeddings)
    if not element.is_dir():
        raise KeyError(f"sample {sample_id} has no embeddings {embeddings!r} ({element}); run embed first")
    emb = ad.io.read_zarr(element)
    barcodes = np.asarray(emb.obs.get(SPOT_INSTANCE_KEY, emb.obs_names)).astype(str)
    keep, used = select_spots(path, barcodes, spots, sample_id)
    barcodes, x = barcodes[keep], np.asarray(emb.X, dtype=np.float32)[keep]
    ids = pd.Index(np.asarray(table.obs.get(SPOT_INSTANCE_KEY, table.obs_names)).astype(str))
    names = hest_gene_names(table)
    first = ~names.duplicated()
    at = names[first].get_indexer(list(genes))
    if (at < 0).any():
        missing = [g for g, i in zip(genes, at, strict=True) if i < 0]
        raise KeyError(f"sample {sample_id} has no gene {', '.join(missing[:5])} ({len(missing)} missing)")
    rows = ids.get_indexer(barcodes)
    if (rows < 0).any():
        raise KeyError(f"sample {sample_id}: {(rows < 0).sum()} embedded spots are not in its table")
    counts = table.X[rows][:, np.flatnonzero(first)[at]]
    counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    return x, np.log1p(counts.astype(np.float64)), used
