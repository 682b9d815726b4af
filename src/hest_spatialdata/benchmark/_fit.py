"""One fold of HEST-Benchmark: features reduced, a ridge fitted on the training side, Pearson r on the test side.

HEST's trainer (``hest/bench/trainer.py``, ``benchmark.py``) by default; the variants of
:data:`~hest_spatialdata.benchmark.PROTOCOLS` as options: no PCA (the full embedding), a fixed alpha or one tuned
on the training samples (inner cross-validation, the test side unseen), Pearson r per test sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: PCA components (HEST's ``latent_dim``), fewer where the training set or the embeddings are smaller.
LATENT_DIM = 256
#: HEST's ridge: ``alpha = RIDGE_ALPHA / (n_features * n_genes)``, lsqr, at most ``RIDGE_MAX_ITER`` iterations.
RIDGE_ALPHA = 100.0
RIDGE_MAX_ITER = 1000
#: ``alpha="tuned"``: the candidates (with HEST's formula's value), chosen by inner cross-validation on the training
#: side. 1e-2 to 1e5: HEST's value is ~0.008 at 256 features and 50 genes, HEST's PR 140 found optima near 5,000.
ALPHA_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
#: Inner folds of ``alpha="tuned"``: groups of training samples (dataset, patient), fewer where there are fewer.
INNER_FOLDS = 5
ALPHA_RULES = ("hest", "tuned")
PEARSON_RULES = ("pooled", "per_sample")


@dataclass
class FoldFit:
    """One fold's outcome: Pearson r per gene, the alpha used, and r per gene of each test sample (per-sample rule)."""

    per_gene: np.ndarray
    alpha: float
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)


def fit_fold(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    seed: int,
    *,
    pca: int | None = LATENT_DIM,
    alpha: float | str = "hest",
    pearson: str = "pooled",
    train_groups: Sequence[str] | np.ndarray | None = None,
    train_samples: Sequence[str] | np.ndarray | None = None,
    test_samples: Sequence[str] | np.ndarray | None = None,
) -> FoldFit:
    """Fit one fold and score it (HEST's trainer with the defaults).

    Parameters
    ----------
    x_train, y_train, x_test, y_test
        Embeddings and ``log1p`` targets, spots x features and spots x genes.
    seed
        ``random_state`` of PCA and ridge.
    pca
        Components of ``StandardScaler`` + ``PCA`` fitted on ``x_train`` (at most the spots and the dimension);
        ``None``: the embeddings as they are (HEST without ``dimreduce``, the paper's Table A13).
    alpha
        ``"hest"``: ``100 / (n_features * n_genes)``; ``"tuned"``: the :data:`ALPHA_GRID` value (or HEST's) with the
        best mean Pearson r in an inner cross-validation over ``train_groups``; a number: that alpha.
    pearson
        ``"pooled"``: r per gene over all test spots (HEST); ``"per_sample"``: r per gene in each test sample, the
        gene's score their mean (samples where the gene is constant left out).
    train_groups
        Group of each training spot (its sample's (dataset, patient) group): the inner folds of ``"tuned"``.
    train_samples, test_samples
        Sample of each training spot (``"tuned"`` with ``"per_sample"``) and test spot (``"per_sample"``).
    """
    train, test = reduce_features(x_train, x_test, pca, seed)
    if alpha == "hest":
        value = hest_alpha(train.shape[1], y_train.shape[1])
    elif alpha == "tuned":
        groups, samples = (_labels(v, len(train)) for v in (train_groups, train_samples))
        value = tune_alpha(train, y_train, groups, samples, seed, pearson)
    else:
        value = float(alpha)
    predictions = ridge(value, seed).fit(train, y_train).predict(test)
    per_gene, per_sample = score(y_test, predictions, pearson, _labels(test_samples, len(test)))
    return FoldFit(per_gene, value, per_sample)


def score(
    y: np.ndarray, predicted: np.ndarray, pearson: str, samples: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pearson r per gene by the rule ``pearson``, and per sample (``"per_sample"``; else empty)."""
    if pearson == "pooled":
        return pearson_per_gene(y, predicted), {}
    per_sample = {s: pearson_per_gene(y[samples == s], predicted[samples == s]) for s in dict.fromkeys(samples)}
    return _nanmean(np.vstack(list(per_sample.values()))), per_sample


def reduce_features(x_train: np.ndarray, x_test: np.ndarray, pca: int | None, seed: int) -> tuple[np.ndarray, ...]:
    """Scaler + PCA fitted on the training embeddings, both sides float32 (HEST wraps them in ``torch.Tensor``)."""
    if pca is None:
        return np.asarray(x_train, dtype=np.float32), np.asarray(x_test, dtype=np.float32)
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    n_components = min(pca, x_train.shape[0], x_train.shape[1])
    reduce = Pipeline([("scaler", StandardScaler()), ("PCA", PCA(n_components=n_components, random_state=seed))])
    return reduce.fit_transform(x_train).astype(np.float32), reduce.transform(x_test).astype(np.float32)


def hest_alpha(n_features: int, n_genes: int) -> float:
    """HEST's ridge alpha: ``100 / (n_features * n_genes)``."""
    return RIDGE_ALPHA / (n_features * n_genes)


def ridge(alpha: float, seed: int) -> Any:
    """HEST's ridge: lsqr, no intercept, ``max_iter`` 1000."""
    from sklearn.linear_model import Ridge

    return Ridge(alpha=alpha, solver="lsqr", fit_intercept=False, max_iter=RIDGE_MAX_ITER, random_state=seed)


def alpha_candidates(n_features: int, n_genes: int) -> list[float]:
    """What ``alpha="tuned"`` chooses from: :data:`ALPHA_GRID` and HEST's value, ascending."""
    return sorted({*ALPHA_GRID, hest_alpha(n_features, n_genes)})


def tune_alpha(
    train: np.ndarray, y_train: np.ndarray, groups: np.ndarray, samples: np.ndarray, seed: int, pearson: str
) -> float:
    """The candidate alpha with the best mean Pearson r over inner folds of the training side (ties: the smaller).

    The inner folds hold out whole groups (``GroupKFold``, at most :data:`INNER_FOLDS`); a training side of one
    group is cut into :data:`INNER_FOLDS` consecutive blocks of spots. Only training spots are used.
    """
    from sklearn.model_selection import GroupKFold, KFold

    n_groups = len(set(groups))
    if n_groups >= 2:
        splits = list(GroupKFold(n_splits=min(INNER_FOLDS, n_groups)).split(train, groups=groups))
    else:
        splits = list(KFold(n_splits=min(INNER_FOLDS, len(train))).split(train))
    candidates = alpha_candidates(train.shape[1], y_train.shape[1])
    scores = []
    for value in candidates:
        folds = []
        for fit, held in splits:
            predicted = ridge(value, seed).fit(train[fit], y_train[fit]).predict(train[held])
            folds.append(_nanmean(score(y_train[held], predicted, pearson, samples[held])[0]))
        scores.append(_nanmean(np.asarray(folds)))
    best = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
    return float(candidates[int(np.argmax(best))])


def pearson_per_gene(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``scipy.stats.pearsonr`` per gene (column); NaN for a constant gene, or for fewer than 2 spots."""
    from scipy.stats import pearsonr

    if len(y) < 2:
        return np.full(y.shape[1], np.nan)
    return np.asarray(pearsonr(y, predicted, axis=0).statistic, dtype=np.float64)


def _labels(values: Sequence[str] | np.ndarray | None, n: int) -> np.ndarray:
    """Labels of ``n`` spots as an object array (one label for all where ``None``)."""
    return np.zeros(n, dtype=object) if values is None else np.asarray(values, dtype=object)


def _nanmean(values: np.ndarray) -> Any:
    """Mean over the first axis without NaN (NaN where all are)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a slice of NaN only
        return np.nanmean(values, axis=0)
