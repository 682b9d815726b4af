"""What a HEST-1k sample is made of, by name: no file is read here beyond a metadata JSON or the catalog.

- :mod:`~hest_spatialdata.source.layout`: the registry of the HEST-1k layout (every part's folder, names, reader);
- :mod:`~hest_spatialdata.source.metadata`: a sample's ``metadata/{id}.json`` and the hub's catalog;
- :mod:`~hest_spatialdata.source.filters`: the one filter language (``--organ``, ``--technology``, ...) on records.
"""
