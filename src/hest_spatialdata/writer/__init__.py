"""Writers of store parts that bypass spatialdata's generic (dask) write path where it costs too much.

- :mod:`hest_spatialdata.writer.image`: a multiscale image element (the slide) written from its pyramid levels by a
  thread pool, into any zarr group (a local folder or object storage), with the metadata spatialdata itself writes.
- :mod:`hest_spatialdata.writer.root`: the root attributes and consolidated metadata of a store whose elements were
  all written without spatialdata.

Importing them does not import spatialdata, so the slide is encoded while spatialdata is still being imported, or
without it at all.
"""
