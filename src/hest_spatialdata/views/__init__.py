"""Looking at a sample or a store outside napari: a quick-look figure, a slide thumbnail, legacy AnnData.

- :mod:`~hest_spatialdata.views.plot`: the quick-look figure (spatialdata-plot);
- :mod:`~hest_spatialdata.views.thumbnail`: a coarse level of a slide with its spots, read alone;
- :mod:`~hest_spatialdata.views.legacy`: a store as scanpy's legacy spatial AnnData;
- :mod:`~hest_spatialdata.views._palette`: the colours shared with the napari plugin.
"""
