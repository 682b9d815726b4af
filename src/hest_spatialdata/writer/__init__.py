"""Writers of store elements that bypass spatialdata's generic (dask) write path where it costs too much.

:mod:`hest_spatialdata.writer.image` writes a multiscale image element (the slide) from tile readers with a thread
pool, into any zarr group (a local folder or object storage), with the metadata spatialdata itself writes.
Importing it does not import spatialdata, so the slide can be encoded while spatialdata is still being imported.
"""
