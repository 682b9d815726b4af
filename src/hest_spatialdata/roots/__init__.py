"""HEST roots, where samples are read from: a local folder, a remote root, the Hugging Face hub.

- :mod:`~hest_spatialdata.roots.samples`: a sample's files found in a root, local or remote, and the ids in a root;
- :mod:`~hest_spatialdata.roots.remote`: remote roots (``hf://datasets/MahmoodLab/hest``, any fsspec URL) read by
  byte ranges without downloading;
- :mod:`~hest_spatialdata.roots.hub`: HEST-1k on the hub: its catalog, downloads, access errors.
"""
