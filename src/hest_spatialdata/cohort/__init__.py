"""HEST cohorts: many converted stores used as one, for analysis and for models.

- :func:`open_cohort` / :class:`Cohort` (``_cohort.py``): the table of samples (from ``attrs["hest"]`` alone),
  ``cohort[sample_id]``, :meth:`~Cohort.to_spatialdata`, :meth:`~Cohort.expression`, :meth:`~Cohort.splits`;
- ``_table.py``: which stores a source names and the cohort table, without importing spatialdata;
- ``_expression.py``: the spot tables concatenated with HEST's gene names;
- ``_patches.py``: :class:`CohortPatchDataset` (patch-expression pairs across samples) and
  :func:`benchmark_genes` (HEST-Benchmark's gene choice).
"""

from __future__ import annotations

from hest_spatialdata.cohort._cohort import Cohort, open_cohort
from hest_spatialdata.cohort._patches import CohortPatchDataset, benchmark_genes
from hest_spatialdata.cohort._table import TABLE_COLUMNS

__all__ = ["TABLE_COLUMNS", "Cohort", "CohortPatchDataset", "benchmark_genes", "open_cohort"]
