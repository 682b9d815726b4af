"""HEST-Benchmark's protocol on embeddings written by :func:`~hest_spatialdata.benchmark.embed`: :func:`benchmark`.

As HEST's ``benchmark.py`` and ``trainer.py`` run it by default (``docs/benchmark.md``): per fold, ``StandardScaler``
then ``PCA(256, random_state=seed)`` fitted on the training embeddings, the reduced features as float32, then
``Ridge(solver="lsqr", alpha=100 / (n_features * n_genes), fit_intercept=False, max_iter=1000,
random_state=seed)`` on ``log1p`` counts; Pearson r per gene on the test fold (``scipy.stats.pearsonr``); the
fold's score is the mean over genes, the result the mean and standard deviation (numpy's, ddof 0) over folds.
The variants users of HEST ask about are options (``pca``, ``alpha``, ``pearson``; :data:`PROTOCOLS` names them),
recorded in the result with the genes, folds and embeddings' config (:mod:`~hest_spatialdata.benchmark._result`).
Known duplicate slides of HEST-1k (:data:`hest_spatialdata.source.layout.DUPLICATE_SAMPLES`) stay on one side of
every fold.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hest_spatialdata._constants import SPOT_INSTANCE_KEY
from hest_spatialdata.benchmark._embed import check_spots, embeddings_table, select_spots
from hest_spatialdata.benchmark._fit import (
    ALPHA_GRID,
    ALPHA_RULES,
    INNER_FOLDS,
    LATENT_DIM,
    PEARSON_RULES,
    RIDGE_MAX_ITER,
    fit_fold,
)
from hest_spatialdata.benchmark._result import BenchmarkResult, _plain

if TYPE_CHECKING:
    import anndata as ad

    from hest_spatialdata.cohort import Cohort

__all__ = ["PROTOCOLS", "BenchmarkResult", "benchmark", "benchmark_folds", "benchmark_groups", "protocol_preset"]

#: The protocols users of HEST-Benchmark run, by name: the options of :func:`benchmark` (``**PROTOCOLS[name]``).
#: ``hest``: HEST's code and its README leaderboard (the default); ``paper-a13``: the paper's Table A13, ridge on the
#: full embedding (HEST issue 144); ``tuned-alpha``: alpha chosen on the training samples (HEST PR 140);
#: ``per-sample``: Pearson r per test sample, then their mean (HEST issue 127).
PROTOCOLS: dict[str, dict[str, Any]] = {
    "hest": {"pca": LATENT_DIM, "alpha": "hest", "pearson": "pooled"},
    "paper-a13": {"pca": None, "alpha": "hest", "pearson": "pooled"},
    "tuned-alpha": {"pca": LATENT_DIM, "alpha": "tuned", "pearson": "pooled"},
    "per-sample": {"pca": LATENT_DIM, "alpha": "hest", "pearson": "per_sample"},
}


def protocol_preset(pca: int | None, alpha: float | str, pearson: str) -> str | None:
    """The name in :data:`PROTOCOLS` of these options, ``None`` if they match none."""
    options = {"pca": pca, "alpha": alpha, "pearson": pearson}
    return next((name for name, preset in PROTOCOLS.items() if preset == options), None)


def check_protocol(pca: int | None, alpha: float | str, pearson: str) -> None:
    """Raise ``ValueError`` naming the option that is not one :func:`benchmark` takes."""
    if pca is not None and (isinstance(pca, bool) or not isinstance(pca, int | np.integer) or pca < 1):
        raise ValueError(f"pca must be a number of components (>= 1) or None (the full embedding), got {pca!r}")
    if isinstance(alpha, str) and alpha not in ALPHA_RULES:
        raise ValueError(f"alpha must be one of {', '.join(map(repr, ALPHA_RULES))} or a number > 0, got {alpha!r}")
    if not isinstance(alpha, str) and (isinstance(alpha, bool) or not (isinstance(alpha, int | float) and alpha > 0)):
        raise ValueError(f"alpha must be one of {', '.join(map(repr, ALPHA_RULES))} or a number > 0, got {alpha!r}")
    if pearson not in PEARSON_RULES:
        raise ValueError(f"pearson must be one of {', '.join(map(repr, PEARSON_RULES))}, got {pearson!r}")


def benchmark_folds(cohort: Cohort, n_folds: int | None = None) -> list[tuple[list[str], list[str]]]:
    """HEST-Benchmark's folds: samples grouped by (dataset title, patient), one group or pack of groups held out.

    ``n_folds=None``: one fold per group, largest group first. With ``n_folds``, groups are dealt largest first
    (ties by dataset title and patient) to the fold with the fewest samples so far. A sample without a patient is
    its own group. Known duplicate slides (:data:`~hest_spatialdata.source.layout.DUPLICATE_SAMPLES`) join one group,
    with a warning naming them (:func:`benchmark_groups`).

    Raises
    ------
    ValueError
        If there are fewer than 2 groups, or ``n_folds`` is not between 2 and their number.
    """
    from hest_spatialdata.cohort._cohort import deal_groups

    groups = benchmark_groups(cohort)
    sizes = Counter(groups.values())
    k = len(sizes) if n_folds is None else n_folds
    if not 2 <= k <= len(sizes):
        raise ValueError(f"the benchmark needs 2 to {len(sizes)} folds (groups of dataset and patient), got {k}")
    folds = deal_groups(groups, sorted(sizes, key=lambda g: (-sizes[g], g)), k)
    warn_duplicates(list(cohort), folds)
    return folds


def benchmark_groups(cohort: Cohort) -> dict[str, str]:
    """Sample id -> its fold group: ``{dataset title}/patient:{patient}`` (``sample:{id}`` without a patient).

    The groups of the members of a known duplicate (:data:`~hest_spatialdata.source.layout.DUPLICATE_SAMPLES`) are
    merged (their labels joined with `` + ``), so that a slide published twice never trains and tests one fold.
    """
    from hest_spatialdata.source.layout import duplicates_in

    groups = {s: _group(cohort, s) for s in cohort}
    for _, members in duplicates_in(groups):
        labels = {groups[m] for m in members}
        merged = " + ".join(sorted(labels))
        groups = {s: merged if g in labels else g for s, g in groups.items()}
    return groups


def warn_duplicates(sample_ids: Sequence[str], folds: Sequence[tuple[Sequence[str], Sequence[str]]]) -> None:
    """Warn (``UserWarning``) of each known duplicate with more than one member in ``sample_ids``.

    The warning names the members, why they are one slide, the source, and the folds that train on one member and
    test another (none for :func:`benchmark_folds`' folds).
    """
    from hest_spatialdata.source.layout import duplicates_in

    for group, members in duplicates_in(sample_ids):
        split = [k for k, (train, test) in enumerate(folds) if set(members) & set(train) and set(members) & set(test)]
        where = (f"folds {', '.join(map(str, split))} train on one and test on another: their scores are not "
                 "HEST-Benchmark's held-out scores" if split else "kept on one side of every fold")  # fmt: skip
        warnings.warn(
            f"samples {' and '.join(members)} are one slide published under {len(members)} ids ({group.evidence}; "
            f"{group.source}): {where}",
            UserWarning,
            stacklevel=3,
        )


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
    pca: int | None = LATENT_DIM,
    alpha: float | Literal["hest", "tuned"] = "hest",
    pearson: Literal["pooled", "per_sample"] = "pooled",
) -> BenchmarkResult:
    """Run HEST-Benchmark's protocol on the embeddings ``embeddings`` of a cohort's stores.

    The defaults are HEST's code (:data:`PROTOCOLS` ``"hest"``); ``**PROTOCOLS[name]`` runs a named variant.

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
        ``test_i.csv``) instead of :func:`benchmark_folds` (a known duplicate split across them is warned of).
    spots
        ``"patches"``: the embedded spots that are in the store's ``patches`` shapes (HEST's patch file), as
        HEST-Benchmark (a store without them: all its embedded spots, with a logged warning); ``"all"``: every
        embedded spot. The genes are chosen on all the spots of the tables either way, as HEST's ``get_k_genes``
        (run on each sample's whole st h5ad).
    pca
        ``StandardScaler`` + PCA to this many components, fitted on each training fold (HEST: 256; fewer where the
        training spots or the dimension are fewer); ``None``: the full embedding, neither scaled nor reduced (the
        paper's Table A13).
    alpha
        The ridge's alpha: ``"hest"``, HEST's ``100 / (n_features * n_genes)``; ``"tuned"``, chosen per fold from
        :data:`~hest_spatialdata.benchmark._fit.ALPHA_GRID` (and HEST's value) by an inner cross-validation on that
        fold's training samples alone, whole (dataset, patient) groups held out (a training side of one group: 5
        blocks of its spots); or a number.
    pearson
        ``"pooled"``: Pearson r per gene over all the test fold's spots (HEST); ``"per_sample"``: per gene in each
        test sample, the gene's fold score the mean over those samples (a sample where the gene is constant left
        out), each sample's r in :attr:`BenchmarkResult.per_sample`.

    Returns
    -------
    The genes, folds and per-gene Pearson r per fold, with the protocol, the embeddings' config and the version.

    Raises
    ------
    KeyError
        If a store holds no such embeddings, or lacks a gene.
    ValueError
        For folds that cannot be made, explicit folds naming samples outside the cohort, or an unknown option.
    """
    from hest_spatialdata.benchmark._genes import benchmark_genes
    from hest_spatialdata.cohort import Cohort, open_cohort
    from hest_spatialdata.storage._parts import read_spot_table

    check_spots(spots)
    check_protocol(pca, alpha, pearson)
    cohort = cohort if isinstance(cohort, Cohort) else open_cohort(cohort)
    tables = {s: read_spot_table(cohort.path(s)) for s in cohort}
    genes_rule = "given" if genes is not None else "hest"
    genes = list(genes) if genes is not None else benchmark_genes(tables.values())
    data = {s: _sample_data(cohort.path(s), tables[s], embeddings, genes, s, spots) for s in cohort}
    folds, folds_rule = _folds(cohort, folds, n_folds)
    options = {"pca": pca, "alpha": alpha, "pearson": pearson}
    columns, n_spots, alphas, per_sample = _fit_folds(data, folds, benchmark_groups(cohort), seed, options)
    index = pd.Index(genes, name="gene")
    protocol = {
        "preset": protocol_preset(pca, alpha, pearson), **options, "seed": seed, "spots": spots,
        "folds": folds_rule, "genes": genes_rule,
        "ridge": {"solver": "lsqr", "fit_intercept": False, "max_iter": RIDGE_MAX_ITER},
    }  # fmt: skip
    if alpha == "tuned":  # and HEST's value of each fold
        protocol |= {"alpha_grid": list(ALPHA_GRID), "inner_folds": INNER_FOLDS}
    return BenchmarkResult(
        embeddings, genes, folds, pd.DataFrame(columns, index=index), seed, n_spots,
        {s: data[s].used for s in data}, protocol=protocol, alphas=alphas,
        embedding_config={s: data[s].config for s in data},
        per_sample=pd.DataFrame(per_sample, index=index) if pearson == "per_sample" else None,
    )  # fmt: skip


def _folds(
    cohort: Cohort, folds: Sequence[tuple[Sequence[str], Sequence[str]]] | None, n_folds: int | None
) -> tuple[list[tuple[list[str], list[str]]], str]:
    """The folds (:func:`benchmark_folds`, or those given, checked), and how they were made."""
    if folds is None:
        return benchmark_folds(cohort, n_folds), "one per group" if n_folds is None else "dealt"
    folds = [(list(a), list(b)) for a, b in folds]
    unknown = sorted({s for train, test in folds for s in (*train, *test)} - set(cohort))
    if unknown:
        raise ValueError(f"the folds name samples not in the cohort: {', '.join(unknown)}")
    warn_duplicates(list(cohort), folds)
    return folds, "given"


def _fit_folds(
    data: Mapping[str, _SampleData],
    folds: Sequence[tuple[list[str], list[str]]],
    groups: Mapping[str, str],
    seed: int,
    options: Mapping[str, Any],
) -> tuple[dict[str, np.ndarray], list[tuple[int, int]], list[float], dict[str, np.ndarray]]:
    """Each fold fitted and scored: r per gene by fold, spots, alphas, and r per gene by (fold, test sample)."""
    columns, n_spots, alphas, per_sample = {}, [], [], {}
    for k, (train, test) in enumerate(folds):
        x_train, y_train = np.concatenate([data[s].x for s in train]), np.concatenate([data[s].y for s in train])
        x_test, y_test = np.concatenate([data[s].x for s in test]), np.concatenate([data[s].y for s in test])
        fit = fit_fold(
            x_train, y_train, x_test, y_test, seed, **options,
            train_groups=_per_spot(data, train, groups), train_samples=_per_spot(data, train),
            test_samples=_per_spot(data, test),
        )  # fmt: skip
        columns[f"fold{k}"] = fit.per_gene
        n_spots.append((len(x_train), len(x_test)))
        alphas.append(fit.alpha)
        per_sample |= {f"fold{k}/{s}": r for s, r in fit.per_sample.items()}
    return columns, n_spots, alphas, per_sample


@dataclass
class _SampleData:
    """One sample's embeddings, targets, the spot rule applied and its embeddings' config."""

    x: np.ndarray
    y: np.ndarray
    used: str
    config: dict[str, Any]


def _per_spot(
    data: Mapping[str, _SampleData], samples: Sequence[str], labels: Mapping[str, str] | None = None
) -> np.ndarray:
    """Each spot's label (its sample id, or ``labels[sample]``), the samples' spots in order."""
    return np.concatenate([np.full(len(data[s].x), s if labels is None else labels[s], dtype=object) for s in samples])


def _sample_data(
    path: Path, table: ad.AnnData, embeddings: str, genes: Sequence[str], sample_id: str, spots: str
) -> _SampleData:
    """One sample's embeddings, ``log1p`` counts of ``genes`` (float64, HEST's ``load_adata``), spot rule, config.

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
    config = _plain(dict(emb.uns.get("embedding_config", {})))
    return _SampleData(x, np.log1p(counts.astype(np.float64)), used, config)
