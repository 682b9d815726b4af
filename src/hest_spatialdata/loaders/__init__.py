"""Patch-expression pairs read from converted stores, for training and feature extraction.

- :mod:`~hest_spatialdata.loaders.dataset`: :class:`PatchDataset`, patches cut around each spot with its expression;
- :mod:`~hest_spatialdata.loaders._patch_reader`: cutting and resampling patches from a level's chunks;
- :mod:`~hest_spatialdata.loaders._zarr_chunks`: whole chunks of an image level, read locally or remotely.
"""

from __future__ import annotations

from hest_spatialdata.loaders.dataset import PatchDataset

__all__ = ["PatchDataset"]
