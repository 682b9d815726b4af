"""HEST-Benchmark on SpatialData stores: patch embeddings with any encoder, and the benchmark protocol.

- :func:`embed` (``_embed.py``): one embedding per spot from the cohort's patch dataset, written into each store
  in sopa's layout (a table ``{name}_embeddings`` annotating the shapes ``{name}_patches``);
- :func:`benchmark` (``_protocol.py``): HEST-Benchmark's folds, PCA + ridge and Pearson r, a :class:`BenchmarkResult`;
- :func:`benchmark_genes` (``_genes.py``): HEST's ``get_k_genes``;
- :func:`as_encoder` (``_encoders.py``, torch and timm in ``_torch.py``): what turns patches into embeddings.

The submodules are imported on first use: ``import hest_spatialdata`` imports this package (so that
``hs.benchmark`` is the function, see there) and stays light. HEST-Benchmark's task list is
:data:`hest_spatialdata.source.layout.BENCH_TASKS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hest_spatialdata.benchmark._embed import embed
    from hest_spatialdata.benchmark._encoders import BUILTIN_ENCODERS, Encoder, HistogramEncoder, as_encoder
    from hest_spatialdata.benchmark._genes import benchmark_genes
    from hest_spatialdata.benchmark._protocol import BenchmarkResult, benchmark, benchmark_folds

_LAZY = {
    "benchmark_genes": "_genes",
    "embed": "_embed",
    "as_encoder": "_encoders",
    "Encoder": "_encoders",
    "HistogramEncoder": "_encoders",
    "BUILTIN_ENCODERS": "_encoders",
    "benchmark": "_protocol",
    "benchmark_folds": "_protocol",
    "BenchmarkResult": "_protocol",
}

__all__ = ["BUILTIN_ENCODERS", "BenchmarkResult", "Encoder", "HistogramEncoder", "as_encoder",
           "benchmark", "benchmark_folds", "benchmark_genes", "embed"]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
