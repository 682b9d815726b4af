"""The one zarr array layout this package reads and writes as plain files, without zarr-python's machinery.

The image levels of our stores are zarr v3 arrays with a regular chunk grid, ``default`` chunk keys, codecs
``bytes`` + ``zstd``, uint8, ``(c, y, x)`` with every channel in one chunk. For exactly that layout the writer
(:class:`hest_spatialdata.writer.image.ChunkFiles`) and the patch loaders (:class:`hest_spatialdata._zarr_chunks.
RawChunks`) handle chunk files themselves, as the zarr v3 specification defines them; any other layout goes through
zarr. Light on purpose: a slide-only conversion imports it without pandas.
"""

from __future__ import annotations

from typing import Any

#: The only codec chain handled as plain files (the one ``store.DEFAULT_RASTER_COMPRESSOR`` writes).
RAW_CODECS = ("bytes", "zstd")


def simple_layout(meta: dict[str, Any]) -> bool:
    """Whether an array's metadata (its ``zarr.json``, or ``zarr.Array.metadata.to_dict()``) has that layout."""
    return (
        meta.get("zarr_format") == 3
        and meta.get("node_type") == "array"
        and meta.get("data_type") == "uint8"
        and len(meta.get("shape", ())) == 3
        and meta.get("chunk_grid", {}).get("name") == "regular"
        and meta.get("chunk_key_encoding", {}).get("name") == "default"
        and tuple(codec.get("name") for codec in meta.get("codecs", ())) == RAW_CODECS
        and not meta.get("storage_transformers")
        and meta["chunk_grid"]["configuration"]["chunk_shape"][0] == meta["shape"][0]
    )
