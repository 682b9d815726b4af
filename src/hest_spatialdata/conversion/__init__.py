"""HEST samples converted into stores: the one ``convert()`` path and the resumable batch under it.

- :mod:`~hest_spatialdata.conversion.convert`: :func:`convert`, samples selected (ids, filters; local or hub) and run;
- :mod:`~hest_spatialdata.conversion.batch`: many samples in this process, on worker processes or a Dask cluster;
- :mod:`~hest_spatialdata.conversion._dask_plugin`: the worker plugin of cluster batches (needs ``distributed``).
"""
