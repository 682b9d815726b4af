"""Where stores live and how they are written, published and read.

- :mod:`~hest_spatialdata.storage.locations`: a store's location (a folder or an fsspec URL) and its storage options;
- :mod:`~hest_spatialdata.storage.store`: one sample written as a store, atomically; complete stores told from
  partial ones (``attrs["hest"]``);
- :mod:`~hest_spatialdata.storage._publish`: a finished store put into object storage complete or not at all;
- :mod:`~hest_spatialdata.storage.reader`: :func:`read_store`, a store opened with spatialdata's own reader;
- :mod:`~hest_spatialdata.storage._parts`: the parts of a store read without spatialdata (spot table, image levels);
- :mod:`~hest_spatialdata.storage._zarr_layout`: the zarr array layouts read and written as plain files.
"""
