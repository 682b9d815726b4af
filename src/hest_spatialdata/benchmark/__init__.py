"""HEST-Benchmark on SpatialData stores: patch embeddings with any encoder, and the benchmark protocol.

- :func:`embed` (``_embed.py``): one embedding per spot from the cohort's patch dataset, written into each store
  in sopa's layout (a table ``{name}_embeddings`` annotating the shapes ``{name}_patches``);
- :func:`benchmark` (``_protocol.py``, one fold's fit in ``_fit.py``): HEST-Benchmark's folds, PCA + ridge and
  Pearson r, its variants (:data:`PROTOCOLS`), a :class:`BenchmarkResult` (``_result.py``: files, comparisons);
- :func:`benchmark_genes` (``_genes.py``): HEST's ``get_k_genes``;
- :func:`wsidata_tile_spec` (``_wsidata.py``): what LazySlide / wsidata need to read the embeddings as features;
- :func:`as_encoder` (``_encoders.py``, torch and timm in ``_torch.py``, weights in ``_weights.py``): what turns
  patches into embeddings; HEST-Benchmark's encoders by name in :mod:`.encoder_registry` (:data:`ENCODERS`).

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
    from hest_spatialdata.benchmark._protocol import PROTOCOLS, benchmark, benchmark_folds
    from hest_spatialdata.benchmark._result import BenchmarkResult
    from hest_spatialdata.benchmark._wsidata import wsidata_tile_spec
    from hest_spatialdata.benchmark.encoder_registry import ENCODERS, EncoderSpec

_LAZY = {
    "benchmark_genes": "_genes",
    "embed": "_embed",
    "as_encoder": "_encoders",
    "Encoder": "_encoders",
    "HistogramEncoder": "_encoders",
    "BUILTIN_ENCODERS": "_encoders",
    "ENCODERS": "encoder_registry",
    "EncoderSpec": "encoder_registry",
    "benchmark": "_protocol",
    "benchmark_folds": "_protocol",
    "BenchmarkResult": "_result",
    "PROTOCOLS": "_protocol",
    "wsidata_tile_spec": "_wsidata",
}

__all__ = ["BUILTIN_ENCODERS", "ENCODERS", "PROTOCOLS", "BenchmarkResult", "Encoder", "EncoderSpec",
           "HistogramEncoder", "as_encoder", "benchmark", "benchmark_folds", "benchmark_genes", "embed",
           "wsidata_tile_spec"]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
