"""What :func:`~hest_spatialdata.benchmark.benchmark` found, and what it was run on: :class:`BenchmarkResult`.

A result records, besides the scores, everything that decides whether two results can be compared: the protocol
(every option and the preset they match), the genes, the folds (sample ids), the spots, the patches the encoder saw
(size and µm/px from each store's ``uns["embedding_config"]``), the embeddings' config and the package version.
:meth:`BenchmarkResult.comparable_with` says which of those differ; :meth:`BenchmarkResult.from_json` reads a
results file back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hest_spatialdata._version import __version__

#: Keys of :meth:`BenchmarkResult.provenance` two results must share for their scores to be compared. What differs
#: by design (the encoder: ``embeddings``) and the package version are listed by :meth:`~BenchmarkResult.differences`.
COMPARABLE_KEYS = ("protocol", "genes", "folds", "spots", "patches")
#: Keys of an embeddings config that say which patches the encoder saw (the rest say which encoder it was).
PATCH_KEYS = ("patch_size_px", "um_per_px")


@dataclass
class BenchmarkResult:
    """What :func:`~hest_spatialdata.benchmark.benchmark` found.

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
    protocol
        The protocol's options (``pca``, ``alpha``, ``pearson``, ``seed``, ``spots``, ``folds``, the ridge's and the
        alpha grid where tuned) and ``preset``, the name in :data:`~hest_spatialdata.benchmark.PROTOCOLS` they
        match (``None`` for none).
    alphas
        The ridge's alpha per fold.
    embedding_config
        Sample id -> the ``uns["embedding_config"]`` of its embeddings table (encoder, version, patches).
    per_sample
        With ``pearson="per_sample"``: Pearson r, genes x (fold, test sample) (columns ``fold0/ID``); else ``None``.
    version
        The package version that ran the benchmark.
    """

    embeddings: str
    genes: list[str]
    folds: list[tuple[list[str], list[str]]]
    per_gene: pd.DataFrame
    seed: int
    n_spots: list[tuple[int, int]] = field(default_factory=list)
    spots: dict[str, str] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    alphas: list[float] = field(default_factory=list)
    embedding_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_sample: pd.DataFrame | None = None
    version: str = __version__

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

    # ------------------------------------------------------------------------------------------ comparing results

    def provenance(self) -> dict[str, Any]:
        """What the scores depend on: :data:`COMPARABLE_KEYS`, ``embeddings`` (each sample's config) and the version."""
        return {
            "protocol": self.protocol,
            "genes": list(self.genes),
            "folds": [{"train": list(train), "test": list(test)} for train, test in self.folds],
            "spots": dict(self.spots),
            "patches": {s: {k: c.get(k) for k in PATCH_KEYS} for s, c in self.embedding_config.items()},
            "embeddings": self.embedding_config,
            "hest_spatialdata_version": self.version,
        }

    def differences(self, other: BenchmarkResult) -> dict[str, tuple[Any, Any]]:
        """Every key of :meth:`provenance` whose value differs, dotted (``protocol.pca``): ``(this, other)``."""
        mine, theirs = _flat(_plain(self.provenance())), _flat(_plain(other.provenance()))
        return {
            k: (mine.get(k), theirs.get(k)) for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)
        }

    def comparable_with(self, other: BenchmarkResult) -> list[str]:
        """The keys that keep the two results' scores from being compared; empty where they can be.

        Those of :data:`COMPARABLE_KEYS` that differ: the protocol's options, the genes, the folds, the spots of
        a sample, a sample's patches (size, µm/px). The encoder (``embeddings.*``) is what a comparison is about,
        and the package version is informative: :meth:`differences` lists them too.
        """
        return [k for k in self.differences(other) if k.split(".", 1)[0] in COMPARABLE_KEYS]

    # ------------------------------------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able values (HEST's ``results_kfold.json`` keys and ours)."""
        out = {
            "embeddings": self.embeddings,
            "pearson_mean": self.pearson_mean,
            "pearson_std": self.pearson_std,
            "mean_per_split": self.pearson_per_fold.tolist(),
            "genes": self.genes,
            "folds": [{"train": list(train), "test": list(test)} for train, test in self.folds],
            "n_spots": [{"train": a, "test": b} for a, b in self.n_spots],
            "spots": self.spots,
            "seed": self.seed,
            "protocol": self.protocol,
            "alphas": list(self.alphas),
            "hest_spatialdata_version": self.version,
            "embedding_config": self.embedding_config,
            "pearson_corrs": [
                {"name": g, "pearson_corrs": row.tolist(), "mean": float(np.mean(row)), "std": float(np.std(row))}
                for g, row in zip(self.genes, self.per_gene.to_numpy(), strict=True)
            ],
        }
        if self.per_sample is not None:
            out["pearson_per_sample"] = {c: self.per_sample[c].tolist() for c in self.per_sample.columns}
        return _plain(out)

    def to_json(self, path: str | Path | None = None) -> str:
        """The result as JSON, also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, source: str | Path | Mapping[str, Any]) -> BenchmarkResult:
        """A result read back from :meth:`to_json`'s file (a path), its text or its dict.

        Raises
        ------
        ValueError
            If the JSON is not a results file of this package.
        """
        if isinstance(source, Mapping):
            data = dict(source)
        else:
            text = Path(source).read_text(encoding="utf-8") if not str(source).lstrip().startswith("{") else source
            data = json.loads(text)
        missing = [k for k in ("embeddings", "genes", "folds", "pearson_corrs") if k not in data]
        if missing:
            raise ValueError(f"not a benchmark results file (no {', '.join(missing)}): {str(source)[:200]}")
        genes = list(data["genes"])
        folds = [(list(f["train"]), list(f["test"])) for f in data["folds"]]
        rows = {g["name"]: g["pearson_corrs"] for g in data["pearson_corrs"]}
        per_gene = pd.DataFrame([rows[g] for g in genes], index=pd.Index(genes, name="gene"),
                                columns=[f"fold{k}" for k in range(len(folds))])  # fmt: skip
        per_sample = data.get("pearson_per_sample")
        return cls(
            embeddings=data["embeddings"], genes=genes, folds=folds, per_gene=per_gene, seed=data.get("seed", 1),
            n_spots=[(n["train"], n["test"]) for n in data.get("n_spots", [])], spots=data.get("spots", {}),
            protocol=data.get("protocol", {}), alphas=data.get("alphas", []),
            embedding_config=data.get("embedding_config", {}),
            per_sample=pd.DataFrame(per_sample, index=per_gene.index) if per_sample else None,
            version=data.get("hest_spatialdata_version", "unknown"),
        )  # fmt: skip

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


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys (lists are values)."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _plain(value: Any) -> Any:
    """JSON's view of ``value``: tuples and arrays as lists, numpy scalars as Python's (NaN stays, as in HEST's)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value
